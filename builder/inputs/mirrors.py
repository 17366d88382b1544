"""Mirror presets: where the logical sources a recipe names (yum repos, the Kubernetes release
tree, release tarballs, registries) are fetched from. Schema and examples: docs/mirrors.md.

A preset is loaded once with `load_preset()` into immutable objects; the RPM, binary and image
code ask it for URLs (`MirrorPreset.yum_url`, `KubernetesTree.binary_url`,
`ReleaseSource.url`) and for the pull reference of a canonical image name
(`MirrorPreset.pull_ref`). Images keep their canonical names in the bundle: the mapping only
says where the bytes come from.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Optional, Tuple, Union
from urllib.parse import urljoin, urlsplit

from builder.errors import BuildError
from installer.format import yamldoc
from installer.format.yamldoc import did_you_mean, kind

__all__ = [
    "Credentials",
    "GpgKey",
    "ImageName",
    "KubernetesTree",
    "MirrorPreset",
    "MirrorPresetError",
    "PullRef",
    "RegistryMirror",
    "ReleaseSource",
    "YumRepo",
    "load_preset",
    "parse_image",
    "parse_preset",
]

DOCKER_HUB = "docker.io"
TEMPLATE_FIELDS = frozenset({"version", "arch"})
_REPO_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]*\Z")
_RELEASE_NAME = re.compile(r"\A[a-z0-9][a-z0-9_-]*\Z")
_HOSTNAME = re.compile(r"\A[A-Za-z0-9.-]+(:[0-9]{1,5})?\Z")
_FINGERPRINT = re.compile(r"\A[0-9A-F]{40}\Z")
_REPO_PATH = re.compile(
    r"\A[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*\Z"
)
NETRC_HINT = (
    "put the user and password in a netrc file (~/.netrc, or the file $NETRC names; mode "
    "0600), which the builder's HTTP client reads for yum repos, GPG keys and release files "
    "(docs/mirrors.md, 'Credentials')"
)
REGISTRY_CREDENTIALS_HINT = (
    "give the registry a 'credentials:' entry (docker_config, or username_env/password_env) "
    "(docs/mirrors.md, 'Credentials')"
)
_TAG = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_DIGEST = re.compile(r"\Asha256:[0-9a-f]{64}\Z")


class MirrorPresetError(BuildError, yamldoc.DocumentError):
    """A mirror preset is malformed, or it has no mirror for something a recipe asks for."""

    guide = "docs/mirrors.md"


# --------------------------------------------------------------------------- the typed preset


@dataclass(frozen=True)
class GpgKey:
    """A vendor key pinned by fingerprint: fetched from `url`, refused unless it matches."""

    url: str
    fingerprint: str  # 40 upper-case hex digits, no spaces


@dataclass(frozen=True)
class YumRepo:
    id: str
    baseurl: str  # always ends with "/"
    gpgkeys: Tuple[GpgKey, ...]
    priority: Optional[int] = None

    def url(self, path: str) -> str:
        """URL of `path` (e.g. "repodata/repomd.xml", "Packages/x.rpm") inside this repo."""
        return urljoin(self.baseurl, path.lstrip("/"))


@dataclass(frozen=True)
class KubernetesTree:
    """A release-file tree in dl.k8s.io's layout: BASE/release/VERSION/bin/linux/ARCH/NAME."""

    base: str  # no trailing "/"

    def binary_url(self, version: str, arch: str, name: str) -> str:
        return f"{self.base}/release/{_vtag(version)}/bin/linux/{arch}/{name}"

    def checksum_url(self, version: str, arch: str, name: str, algorithm: str = "sha256") -> str:
        """The file holding only the hex digest of `name` (dl.k8s.io publishes `.sha256`)."""
        return self.binary_url(version, arch, name) + "." + algorithm


@dataclass(frozen=True)
class ReleaseSource:
    """A release tarball addressed by a template with `{version}` (the tag, "v1.23.0") and
    `{arch}` ("amd64", "arm64")."""

    name: str
    template: str

    def url(self, version: str, arch: str) -> str:
        return self.template.format(version=_vtag(version), arch=arch)


@dataclass(frozen=True)
class Credentials:
    """Where a registry's credentials come from; never the secret itself.

    Either a docker `config.json` (its `auths` entry for the mirror's host, or a credential
    helper it names), or two environment variables."""

    docker_config: Optional[str] = None
    username_env: Optional[str] = None
    password_env: Optional[str] = None


@dataclass(frozen=True)
class RegistryMirror:
    """Where images of one canonical registry host are pulled from."""

    canonical: str  # "registry.k8s.io", "docker.io", ...
    url: str  # scheme://host[:port], no path
    namespace: str = ""  # "google_containers": prepended to every repository path
    flatten: Tuple[str, ...] = ()  # repository paths pulled by their last component only
    flatten_all: bool = False
    ca: Optional[str] = None  # PEM bundle to trust for this endpoint
    insecure: bool = False  # allow plain HTTP (http://) or skip TLS verification (https://)
    credentials: Optional[Credentials] = None

    @property
    def host(self) -> str:
        """host[:port] as it appears in a pull reference."""
        return urlsplit(self.url).netloc

    def repository(self, canonical_path: str) -> str:
        """The repository path on this mirror for a canonical repository path."""
        path = canonical_path
        if self.flatten_all or path in self.flatten:
            # kubeadm does the same with a custom imageRepository: <repo>/coredns, not
            # <repo>/coredns/coredns (cmd/kubeadm/app/images/images.go, GetDNSImage).
            path = path.rsplit("/", 1)[-1]
        return f"{self.namespace}/{path}" if self.namespace else path


@dataclass(frozen=True)
class ImageName:
    """A canonical, fully qualified image reference: registry.k8s.io/coredns/coredns:v1.8.6."""

    registry: str
    repository: str
    tag: Optional[str] = None
    digest: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}{_suffix(self.tag, self.digest)}"


@dataclass(frozen=True)
class PullRef:
    """Where to pull one canonical image from: the mirror, the repository path on it, the tag."""

    image: ImageName
    mirror: RegistryMirror
    repository: str

    @property
    def reference(self) -> str:
        """The pull reference as a registry client names it: 127.0.0.1:5000/ns/repo:tag."""
        return f"{self.mirror.host}/{self.repository}{_suffix(self.image.tag, self.image.digest)}"

    @property
    def manifest_url(self) -> str:
        """OCI distribution API URL of this image's manifest (by digest when one is pinned)."""
        ref = self.image.digest or self.image.tag
        return f"{self.mirror.url}/v2/{self.repository}/manifests/{ref}"

    def blob_url(self, digest: str) -> str:
        return f"{self.mirror.url}/v2/{self.repository}/blobs/{digest}"


@dataclass(frozen=True)
class MirrorPreset:
    name: str
    source: str  # the file it came from, for messages
    yum: Mapping[str, YumRepo]
    kubernetes: KubernetesTree
    releases: Mapping[str, ReleaseSource]
    registries: Mapping[str, RegistryMirror]
    description: str = ""

    def repo(self, repo_id: str) -> YumRepo:
        try:
            return self.yum[repo_id]
        except KeyError:
            raise self._missing("yum repo", repo_id, self.yum) from None

    def yum_url(self, repo_id: str, path: str) -> str:
        return self.repo(repo_id).url(path)

    def release(self, name: str) -> ReleaseSource:
        try:
            return self.releases[name]
        except KeyError:
            raise self._missing("release source", name, self.releases) from None

    def release_url(self, name: str, version: str, arch: str) -> str:
        return self.release(name).url(version, arch)

    def registry(self, canonical_host: str) -> RegistryMirror:
        host = _canonical_host(canonical_host)
        try:
            return self.registries[host]
        except KeyError:
            raise self._missing("registry", host, self.registries) from None

    def pull_ref(self, image: Union[str, ImageName]) -> PullRef:
        """Map a canonical image reference to the mirror's repository and reference.

        `registry.k8s.io/coredns/coredns:v1.8.6` with the Aliyun preset gives
        `registry.cn-hangzhou.aliyuncs.com/google_containers/coredns:v1.8.6`."""
        name = parse_image(image) if isinstance(image, str) else image
        mirror = self.registry(name.registry)
        return PullRef(name, mirror, mirror.repository(name.repository))

    def _missing(self, what: str, name: str, known: Mapping[str, Any]) -> MirrorPresetError:
        return MirrorPresetError(
            f"no {what} {name!r} in preset {self.name!r}",
            hint=did_you_mean(name, known) or f"known: {', '.join(sorted(known)) or 'none'}",
            file=self.source,
        )


# --------------------------------------------------------------------------- image references


def parse_image(ref: str) -> ImageName:
    """Parse and normalise an image reference the way docker does: `flannel/flannel:v0.22.3`
    is `docker.io/flannel/flannel:v0.22.3`, `busybox` is `docker.io/library/busybox:latest`."""
    rest, digest = ref, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise MirrorPresetError(f"image {ref!r}: bad digest {digest!r} (want sha256:<64 hex>)")
    tag = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG.match(tag):
            raise MirrorPresetError(f"image {ref!r}: bad tag {tag!r}")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, path = _canonical_host(first), remainder
    else:
        registry, path = DOCKER_HUB, rest
    if registry == DOCKER_HUB and "/" not in path:
        path = "library/" + path
    if not _REPO_PATH.match(path):
        raise MirrorPresetError(f"image {ref!r}: bad repository path {path!r}")
    if tag is None and digest is None:
        tag = "latest"
    return ImageName(registry, path, tag, digest)


def _canonical_host(host: str) -> str:
    return DOCKER_HUB if host in ("index.docker.io", "registry-1.docker.io") else host


def _suffix(tag: Optional[str], digest: Optional[str]) -> str:
    return (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _vtag(version: str) -> str:
    return version if version.startswith("v") else "v" + version


# --------------------------------------------------------------------------- loading


def load_preset(path: Union[str, Path]) -> MirrorPreset:
    """Read and validate a preset file; every problem is a MirrorPresetError naming the file,
    the line where known, and the key."""
    text = yamldoc.read(str(path), "mirror preset", MirrorPresetError)
    return parse_preset(text, str(path))


def parse_preset(text: str, source: str = "<preset>") -> MirrorPreset:
    """Validate preset YAML text; `source` names it in error messages."""
    document = yamldoc.parse(text, source, MirrorPresetError)
    return _Reader(document).preset(document.data)


class _Reader(yamldoc.Reader):
    """Walks the plain data from safe_load, checking as it goes; knows lines from compose."""

    error_class = MirrorPresetError

    def url(
        self,
        value: Any,
        path: Tuple[Any, ...],
        schemes: Tuple[str, ...] = ("http", "https", "file"),
        credentials_hint: str = NETRC_HINT,
    ) -> str:
        text = self.string(value, path)
        parts = urlsplit(text)
        if "@" in parts.netloc:
            # The URL goes into the committed lock and every host's bundle.json.
            shown = re.sub(r"//[^/]*@", "//***@", text)
            raise self.error(
                path,
                f"{shown!r}: credentials in a URL are refused, they would be written into "
                "the lock and every host's bundle.json",
                credentials_hint,
            )
        if parts.scheme not in schemes:
            raise self.error(
                path, f"malformed URL {text!r}: scheme must be one of {', '.join(schemes)}"
            )
        if parts.scheme == "file":
            if not parts.path.startswith("/") or parts.netloc not in ("", "localhost"):
                raise self.error(path, f"malformed URL {text!r}: want file:///absolute/path")
        else:
            try:
                port_ok = parts.port is None or 0 < parts.port < 65536
            except ValueError:
                port_ok = False
            if (
                not parts.hostname
                or not port_ok
                or not _HOSTNAME.match(parts.netloc.split("@")[-1])
            ):
                raise self.error(path, f"malformed URL {text!r}: no valid host")
        if parts.query or parts.fragment or any(c.isspace() for c in text):
            raise self.error(path, f"malformed URL {text!r}: no query, fragment or spaces allowed")
        return text

    def preset(self, data: Any) -> MirrorPreset:
        top = self.mapping(
            data, (), ("name", "yum", "kubernetes", "releases", "registries"), ("description",)
        )
        yum = self.table(top["yum"], ("yum",))
        releases = self.table(top["releases"], ("releases",))
        registries = self.table(top["registries"], ("registries",))
        return MirrorPreset(
            name=self.string(top["name"], ("name",)),
            source=self.source,
            description=self.string(top["description"], ("description",))
            if top.get("description")
            else "",
            yum=MappingProxyType({r: self.yum_repo(r, spec) for r, spec in sorted(yum.items())}),
            kubernetes=self.kubernetes(top["kubernetes"]),
            releases=MappingProxyType({n: self.release(n, s) for n, s in sorted(releases.items())}),
            registries=MappingProxyType(
                {h: self.registry(h, s) for h, s in sorted(registries.items())}
            ),
        )

    def yum_repo(self, repo_id: Any, spec: Any) -> YumRepo:
        path = ("yum", repo_id)
        if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
            raise self.error(path, "a repo id is letters, digits and _ . : - only")
        spec = self.mapping(spec, path, ("baseurl", "gpgkeys"), ("priority",))
        priority = spec.get("priority")
        if priority is not None and (
            isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 99
        ):
            raise self.error(path + ("priority",), f"must be an integer 1..99, not {priority!r}")
        keys = spec["gpgkeys"]
        if not isinstance(keys, list) or not keys:
            raise self.error(path + ("gpgkeys",), "must be a non-empty list: gpgcheck stays on")
        baseurl = self.url(spec["baseurl"], path + ("baseurl",))
        return YumRepo(
            id=repo_id,
            baseurl=baseurl if baseurl.endswith("/") else baseurl + "/",
            gpgkeys=tuple(self.gpgkey(k, path + ("gpgkeys", i)) for i, k in enumerate(keys)),
            priority=priority,
        )

    def gpgkey(self, spec: Any, path: Tuple[Any, ...]) -> GpgKey:
        spec = self.mapping(spec, path, ("url", "fingerprint"))
        raw = spec["fingerprint"]
        fingerprint = re.sub(r"\s+", "", raw).upper() if isinstance(raw, str) else ""
        if not _FINGERPRINT.match(fingerprint):
            raise self.error(
                path + ("fingerprint",),
                f"bad fingerprint {raw!r}: want 40 hex digits (spaces allowed)",
            )
        return GpgKey(self.url(spec["url"], path + ("url",)), fingerprint)

    def kubernetes(self, spec: Any) -> KubernetesTree:
        spec = self.mapping(spec, ("kubernetes",), ("base",))
        return KubernetesTree(self.url(spec["base"], ("kubernetes", "base")).rstrip("/"))

    def release(self, name: Any, spec: Any) -> ReleaseSource:
        path = ("releases", name)
        if not isinstance(name, str) or not _RELEASE_NAME.match(name):
            raise self.error(path, "a release name is lower-case letters, digits, _ and - only")
        spec = self.mapping(spec, path, ("url",))
        template = self.string(spec["url"], path + ("url",))
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        except ValueError as exc:
            raise self.error(path + ("url",), f"bad URL template {template!r}: {exc}") from exc
        if not fields <= TEMPLATE_FIELDS or "version" not in fields:
            raise self.error(
                path + ("url",),
                f"URL template {template!r} must use {{version}} and may use {{arch}}, "
                f"nothing else (found: {', '.join(sorted(fields)) or 'none'})",
            )
        self.url(template.format(version="v0.0.0", arch="amd64"), path + ("url",))
        return ReleaseSource(name, template)

    def registry(self, host: Any, spec: Any) -> RegistryMirror:
        path = ("registries", host)
        if (
            not isinstance(host, str)
            or not _HOSTNAME.match(host)
            or "." not in host
            and host != "localhost"
        ):
            raise self.error(path, "a canonical registry is a host name such as registry.k8s.io")
        spec = self.mapping(
            spec, path, ("url",), ("namespace", "flatten", "ca", "insecure", "credentials")
        )
        url = self.url(
            spec["url"], path + ("url",), ("http", "https"), REGISTRY_CREDENTIALS_HINT
        ).rstrip("/")
        if urlsplit(url).path:
            raise self.error(
                path + ("url",), f"{url!r}: put the path in 'namespace', not in the URL"
            )
        insecure = self.boolean(spec.get("insecure", False), path + ("insecure",))
        if url.startswith("http:") and not insecure:
            raise self.error(
                path + ("url",),
                "plain HTTP needs 'insecure: true'",
                "the registry is reached without TLS; say so explicitly",
            )
        namespace = ""
        if spec.get("namespace") is not None:
            namespace = self.string(spec["namespace"], path + ("namespace",)).strip("/")
            if not _REPO_PATH.match(namespace):
                raise self.error(path + ("namespace",), f"bad namespace {namespace!r}")
        flatten, flatten_all = self.flatten(spec.get("flatten", False), path + ("flatten",))
        ca = self.string(spec["ca"], path + ("ca",)) if spec.get("ca") is not None else None
        creds = (
            self.credentials(spec["credentials"], path + ("credentials",))
            if spec.get("credentials") is not None
            else None
        )
        return RegistryMirror(
            _canonical_host(host), url, namespace, flatten, flatten_all, ca, insecure, creds
        )

    def flatten(self, value: Any, path: Tuple[Any, ...]) -> Tuple[Tuple[str, ...], bool]:
        if isinstance(value, bool):
            return (), value
        if not isinstance(value, list):
            raise self.error(
                path, f"must be true, false or a list of repository paths, not {kind(value)}"
            )
        items = []
        for index, item in enumerate(value):
            text = self.string(item, path + (index,))
            if not _REPO_PATH.match(text) or "/" not in text:
                raise self.error(
                    path + (index,), f"{text!r}: want a repository path such as coredns/coredns"
                )
            items.append(text)
        return tuple(items), False

    def credentials(self, spec: Any, path: Tuple[Any, ...]) -> Credentials:
        spec = self.mapping(spec, path, (), ("docker_config", "username_env", "password_env"))
        get = {k: self.string(v, path + (k,)) for k, v in spec.items()}
        envs = ("username_env" in get, "password_env" in get)
        if "docker_config" in get and any(envs):
            raise self.error(path, "use either docker_config or username_env/password_env")
        if any(envs) and not all(envs):
            raise self.error(path, "username_env and password_env go together")
        if not get:
            raise self.error(path, "name docker_config, or username_env and password_env")
        return Credentials(**get)

