"""Feed a distribution registry's filesystem storage straight from the bundle's image archive
(`images.mode: registry`, docs/cluster.md), so that the registry serves the bundle's images
without a push, and write the containerd `hosts.toml` that sends pulls there.

The layout is distribution's (registry/storage/paths.go, `pathMapper.path`), under the
filesystem driver's root directory:

    docker/registry/v2/blobs/sha256/<first two hex>/<hex>/data    blobDataPathSpec
    docker/registry/v2/repositories/<name>/
      _layers/sha256/<hex>/link                        layerLinkPathSpec
      _manifests/revisions/sha256/<hex>/link           manifestRevisionLinkPathSpec
      _manifests/tags/<tag>/index/sha256/<hex>/link    manifestTagIndexEntryLinkPathSpec
      _manifests/tags/<tag>/current/link               manifestTagCurrentPathSpec

A link file holds `sha256:<hex>` and nothing else (paths.go, layerLinkPathSpec). An image is
stored under its whole reference as the repository name (`registry.k8s.io/pause`), so that
images of different registries never share a repository; containerd reaches it through a
hosts.toml whose host path is `/v2/<registry>` with `override_path` (hosts_toml).

Nothing half-written: every blob and link is written beside its place and renamed over it
(installer.atomic), every blob is checked against its digest (and, with `sha256`, the whole
archive against its signed digest) before any link names it, and the tag's `current` link,
which makes an image pullable, is written last. Python 3.6, stdlib only.
"""

import os
from typing import BinaryIO, Callable, Iterable, List, Optional, Sequence, Tuple

from installer.atomic import replace_file
from installer.format.imagearchive import ArchivedImage, select, stream_blobs

V2 = os.path.join("docker", "registry", "v2")
# containerd's config_path in images.mode registry: a folder per registry with its hosts.toml
CERTS_D = "/etc/containerd/certs.d"
# The ports of the control planes' registry. Both are http_port_t in selinux-policy
# (corenetwork.te.in: `network_port(http, tcp,80, ..., tcp,8008, tcp,8009, tcp,8443, ...)`):
# the host's haproxy (load_balancer.mode services, domain haproxy_t) may bind and connect to
# that type without the haproxy_connect_any boolean, as it does for the apiserver frontend on
# 8443. distribution's usual 5000 is commplex_main_port_t, which haproxy_t may neither bind
# nor connect to under `selinux: enforcing` unless that boolean opens every port to it.
# REGISTRY_PORT: what containerd pulls from, the load balancer's frontend behind the
# control-plane endpoint; REGISTRY_NODE_PORT: where each control plane's registry listens
# (on its node address; haproxy's `bind *:` on the same host rules out one port for both).
REGISTRY_PORT = 8008
REGISTRY_NODE_PORT = 8009
# The CA containerd trusts for it: the cluster's (kubeadm's, made at install on the first
# control plane; every node has it once it has joined)
REGISTRY_CA = "/etc/kubernetes/pki/ca.crt"


def split_reference(reference: str) -> Tuple[str, str, Optional[str]]:
    """(registry host, repository name as stored, tag or None) of a full reference such as
    `docker.io/flannel/flannel:v0.22.3` -> (`docker.io`, `docker.io/flannel/flannel`,
    `v0.22.3`); a reference by digest (`name@sha256:...`) has no tag."""
    name = reference.split("@", 1)[0]
    tag = None
    head, _, last = name.rpartition("/")
    if "@" not in reference and ":" in last:
        last, tag = last.split(":", 1)
        name = head + "/" + last
    return name.split("/", 1)[0], name, tag


def blob_path(root: str, hexd: str) -> str:
    return os.path.join(root, V2, "blobs", "sha256", hexd[:2], hexd, "data")


def feed(archive: str, root: str, references: Optional[Iterable[str]] = None,
         sha256: Optional[str] = None) -> List[ArchivedImage]:
    """Lay the images `references` of `archive` (all with None) out as registry storage under
    `root` and return them. Blobs already there are kept (a blob's path is its digest); a
    problem raises ImageArchiveError or VerificationError before any tag of this call points
    at a blob that is not in place."""
    images, needed = select(archive, references)
    for hexd, _size, blocks in stream_blobs(archive, needed, sha256):
        target = blob_path(root, hexd)
        if os.path.exists(target):
            for _block in blocks:  # still read to the end: that checks the digest
                pass
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        replace_file(target, _writer(blocks), 0o644)
    for image in images:
        link_image(root, image.reference, image.manifest_digest, image.blobs)
    return images


def place_blob(root: str, hexd: str, staged: str) -> None:
    """Move the checked blob file `staged` (on the storage's file system) into its place,
    unless that blob is there already (a blob's path is its digest)."""
    target = blob_path(root, hexd)
    if os.path.exists(target):
        os.unlink(staged)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.chmod(staged, 0o644)
    os.replace(staged, target)


def tag_link(root: str, reference: str) -> Optional[str]:
    """The manifest digest (`sha256:<hex>`) the tag of `reference` points at under `root`,
    or None: no such tag (or a reference by digest)."""
    _registry, name, tag = split_reference(reference)
    if tag is None:
        return None
    try:
        with open(os.path.join(root, V2, "repositories", name, "_manifests", "tags", tag,
                               "current", "link"), "r", encoding="ascii") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None


def _writer(blocks: Iterable[bytes]) -> Callable[[BinaryIO], None]:
    def fill(handle: BinaryIO) -> None:
        for block in blocks:
            handle.write(block)
    return fill


def link_image(root: str, reference: str, manifest_digest: str, blobs: Sequence[str]) -> None:
    """Link the image `reference` (its manifest and `blobs`, hex digests, all in place) into
    its repository; the tag's `current` link, which makes it pullable, last."""
    _registry, name, tag = split_reference(reference)
    repository = os.path.join(root, V2, "repositories", name)
    manifest = manifest_digest[len("sha256:"):]
    for hexd in blobs:
        if hexd != manifest:  # the config and the layers
            _link(os.path.join(repository, "_layers", "sha256", hexd, "link"), hexd)
    _link(os.path.join(repository, "_manifests", "revisions", "sha256", manifest, "link"),
          manifest)
    if tag is not None:
        tags = os.path.join(repository, "_manifests", "tags", tag)
        _link(os.path.join(tags, "index", "sha256", manifest, "link"), manifest)
        _link(os.path.join(tags, "current", "link"), manifest)


def _link(path: str, hexd: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    replace_file(path, lambda handle: handle.write(("sha256:" + hexd).encode("ascii")), 0o644)


def hosts_files(references: Iterable[str], endpoint_host: str, nodes: Sequence[str] = (),
                ports: Tuple[int, int] = (REGISTRY_PORT, REGISTRY_NODE_PORT)
                ) -> List[Tuple[str, str]]:
    """(path, text) of the hosts.toml of every registry `references` name, each sending its
    pulls to the registry at `endpoint_host`:REGISTRY_PORT, then to each control plane's own
    registry (`nodes`, their addresses) at REGISTRY_NODE_PORT (`ports` overrides both)."""
    registries = sorted({split_reference(ref)[0] for ref in references})
    mirror = "https://{}:{}".format(endpoint_host, ports[0])
    others = ["https://{}:{}".format(address, ports[1]) for address in nodes]
    return [(os.path.join(CERTS_D, registry, "hosts.toml"),
             hosts_toml(registry, mirror, REGISTRY_CA, others)) for registry in registries]


def hosts_toml(registry: str, mirror: str, ca_file: str, fallbacks: Sequence[str] = ()) -> str:
    """containerd's /etc/containerd/certs.d/<registry>/hosts.toml (containerd docs/hosts.md):
    pull and resolve `registry`'s images from `mirror` (https://HOST:PORT), where feed() stored
    them under `<registry>/<name>`, trusting `ca_file`; then from each of `fallbacks` in turn.
    containerd tries the next host when one answers 404 or cannot be reached (remotes/docker/
    resolver.go, Resolve: "trying next host"), so an image that the registry the load balancer
    chose lacks (a control plane whose upgrade has not fed it yet) still comes from one that
    has it. `server` stays the registry itself (Docker Hub's API host for docker.io, as in
    containerd's docs/hosts.md example)."""
    hosts = "".join(('\n[host."{url}/v2/{registry}"]\n'
                     '  capabilities = ["pull", "resolve"]\n'
                     '  ca = "{ca}"\n'
                     '  override_path = true\n').format(url=url, registry=registry, ca=ca_file)
                    for url in [mirror] + list(fallbacks))
    return 'server = "https://{server}"\n{hosts}'.format(
        hosts=hosts, server="registry-1.docker.io" if registry == "docker.io" else registry)
