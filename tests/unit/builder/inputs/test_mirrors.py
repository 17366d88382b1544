"""Mirror presets: the shipped presets load, bad ones are refused naming file, line and key,
and canonical image names map to the right mirror references."""

from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.inputs.mirrors import MirrorPresetError, load_preset, parse_image, parse_preset

PRESETS = sorted((Path(__file__).parents[4] / "manifests" / "mirrors").glob("*.yaml"))

MINIMAL = """\
name: test
yum:
  base:
    baseurl: https://vault.example.org/7.9.2009/os/x86_64
    gpgkeys:
      - url: https://vault.example.org/RPM-GPG-KEY
        fingerprint: 6341 AB27 53D7 8A78 A7C2 7BB1 24C6 A8A7 F4A8 0EB5
kubernetes:
  base: https://dl.example.org/
releases:
  crictl:
    url: https://example.org/cri-tools/{version}/crictl-{version}-linux-{arch}.tar.gz
registries:
  registry.k8s.io:
    url: https://mirror.example.org
    namespace: google_containers
    flatten: [coredns/coredns]
  docker.io:
    url: http://127.0.0.1:5000
    insecure: true
    credentials:
      username_env: HUB_USER
      password_env: HUB_PASSWORD
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "preset.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", PRESETS, ids=[p.name for p in PRESETS])
def test_every_shipped_preset_loads(path):
    preset = load_preset(path)
    # the EL7 presets have CentOS-Base.repo's ids, the EL8 ones CentOS-Linux-*.repo's, the Rocky
    # 8 and EL9 ones Rocky's and the Kubernetes docs' kubernetes.repo
    rocky = {"baseos", "appstream", "kubernetes"}
    want = ({"baseos", "appstream", "extras"} if path.stem.endswith("-el8") else
            rocky if "-el9" in path.stem or "rocky8" in path.stem else
            {"base", "updates", "extras"})
    assert want | {"docker-ce-stable"} <= set(preset.yum)
    assert {"crictl", "cni"} <= set(preset.releases)
    assert {"registry.k8s.io", "docker.io"} <= set(preset.registries)
    for repo in preset.yum.values():
        assert repo.gpgkeys, f"{path.name}: {repo.id} would install without gpgcheck"


def test_shipped_presets_exist():
    assert {p.name for p in PRESETS} >= {"upstream.yaml", "china.yaml"}


def test_upstream_urls():
    preset = load_preset(PRESETS[0].parent / "upstream.yaml")
    assert preset.yum_url("updates", "repodata/repomd.xml") == (
        "https://vault.centos.org/7.9.2009/updates/x86_64/repodata/repomd.xml"
    )
    assert preset.repo("base").gpgkeys[0].fingerprint == "6341AB2753D78A78A7C27BB124C6A8A7F4A80EB5"
    assert preset.repo("docker-ce-stable").gpgkeys[0].fingerprint == (
        "060A61C51B558A7F742B77AAC52FEB6B621E9F35"
    )
    assert preset.kubernetes.binary_url("1.23.17", "arm64", "kubelet") == (
        "https://dl.k8s.io/release/v1.23.17/bin/linux/arm64/kubelet"
    )
    assert preset.kubernetes.checksum_url("v1.23.17", "amd64", "kubeadm") == (
        "https://dl.k8s.io/release/v1.23.17/bin/linux/amd64/kubeadm.sha256"
    )
    assert preset.release_url("cni", "v1.2.0", "amd64") == (
        "https://github.com/containernetworking/plugins/releases/download/v1.2.0/"
        "cni-plugins-linux-amd64-v1.2.0.tgz"
    )
    assert preset.release_url("crictl", "1.23.0", "arm64") == (
        "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.23.0/"
        "crictl-v1.23.0-linux-arm64.tar.gz"
    )
    ref = preset.pull_ref("registry.k8s.io/coredns/coredns:v1.8.6")
    assert ref.reference == "registry.k8s.io/coredns/coredns:v1.8.6"


def test_china_flattens_coredns_into_google_containers():
    preset = load_preset(PRESETS[0].parent / "china.yaml")
    ref = preset.pull_ref("registry.k8s.io/coredns/coredns:v1.8.6")
    assert ref.reference == "registry.cn-hangzhou.aliyuncs.com/google_containers/coredns:v1.8.6"
    assert str(ref.image) == "registry.k8s.io/coredns/coredns:v1.8.6"
    pause = preset.pull_ref("registry.k8s.io/pause:3.6")
    assert pause.reference == "registry.cn-hangzhou.aliyuncs.com/google_containers/pause:3.6"
    assert pause.manifest_url == (
        "https://registry.cn-hangzhou.aliyuncs.com/v2/google_containers/pause/manifests/3.6"
    )


def test_china_fetches_binaries_through_the_daocloud_prefix_with_upstream_checksums():
    # DaoCloud's public-binary-files-mirror keeps the original host and path under one
    # prefix, so the checksum next to each file is still the one dl.k8s.io / GitHub publish.
    preset = load_preset(PRESETS[0].parent / "china.yaml")
    prefix = "https://files.m.daocloud.io/"
    assert preset.kubernetes.binary_url("v1.23.17", "amd64", "kubeadm") == (
        prefix + "dl.k8s.io/release/v1.23.17/bin/linux/amd64/kubeadm")
    assert preset.kubernetes.checksum_url("v1.23.17", "amd64", "kubeadm") == (
        prefix + "dl.k8s.io/release/v1.23.17/bin/linux/amd64/kubeadm.sha256")
    assert preset.release_url("crictl", "v1.23.0", "amd64") == (
        prefix + "github.com/kubernetes-sigs/cri-tools/releases/download/v1.23.0/"
        "crictl-v1.23.0-linux-amd64.tar.gz")
    assert preset.release_url("cni", "v1.1.1", "amd64") == (
        prefix + "github.com/containernetworking/plugins/releases/download/v1.1.1/"
        "cni-plugins-linux-amd64-v1.1.1.tgz")


def test_reference_mapping(tmp_path):
    preset = load_preset(write(tmp_path, MINIMAL))
    assert preset.pull_ref("registry.k8s.io/coredns/coredns:v1.8.6").reference == (
        "mirror.example.org/google_containers/coredns:v1.8.6"
    )
    assert preset.pull_ref("registry.k8s.io/kube-apiserver:v1.23.17").repository == (
        "google_containers/kube-apiserver"
    )
    # short docker names are normalised like docker does; no namespace on this mirror
    flannel = preset.pull_ref("flannel/flannel:v0.22.3")
    assert flannel.reference == "127.0.0.1:5000/flannel/flannel:v0.22.3"
    assert flannel.blob_url("sha256:" + "a" * 64).startswith("http://127.0.0.1:5000/v2/flannel/")
    assert preset.pull_ref("busybox").reference == "127.0.0.1:5000/library/busybox:latest"
    digest = "sha256:" + "0" * 64
    by_digest = preset.pull_ref(f"registry.k8s.io/pause:3.6@{digest}")
    assert by_digest.manifest_url.endswith(f"/google_containers/pause/manifests/{digest}")
    assert preset.registries["docker.io"].credentials.username_env == "HUB_USER"


def test_flatten_all(tmp_path):
    text = MINIMAL.replace("flatten: [coredns/coredns]", "flatten: true")
    preset = load_preset(write(tmp_path, text))
    assert preset.pull_ref("registry.k8s.io/a/b/c:1").repository == "google_containers/c"


def test_unknown_registry_is_an_error_not_a_silent_direct_pull(tmp_path):
    preset = load_preset(write(tmp_path, MINIMAL))
    with pytest.raises(MirrorPresetError, match="no registry 'quay.io'") as info:
        preset.pull_ref("quay.io/coreos/etcd:v3.5.6")
    assert str(tmp_path / "preset.yaml") in str(info.value)


def test_parse_image_rejects_garbage():
    assert parse_image("index.docker.io/library/nginx:1").registry == "docker.io"
    assert parse_image("127.0.0.1:5000/x/y").tag == "latest"
    for bad in ("registry.k8s.io/Upper:1", "registry.k8s.io/pause@sha256:xyz", "pause:bad tag"):
        with pytest.raises(MirrorPresetError):
            parse_image(bad)


def test_unknown_key_names_file_line_key_and_suggests(tmp_path):
    path = write(tmp_path, MINIMAL.replace("    flatten: [", "    flaten: ["))
    with pytest.raises(MirrorPresetError) as info:
        load_preset(path)
    message = str(info.value)
    assert f"{path}:17:" in message
    assert "registries['registry.k8s.io'].flaten" in message
    assert info.value.key == "registries['registry.k8s.io'].flaten"
    assert "did you mean 'flatten'?" in info.value.diagnostics()
    assert isinstance(info.value, BuildError)


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, MINIMAL + "registry: {}\n")
    with pytest.raises(MirrorPresetError, match=r"preset\.yaml:\d+: registry: unknown key") as info:
        load_preset(path)
    assert "did you mean 'registries'?" in info.value.hint


@pytest.mark.parametrize(
    "old, new, key",
    [
        (
            "https://vault.example.org/7.9.2009",
            "htps://vault.example.org/7.9.2009",
            "yum.base.baseurl",
        ),
        ("https://vault.example.org/7.9.2009", "https:///7.9.2009", "yum.base.baseurl"),
        ("https://dl.example.org/", "dl.example.org", "kubernetes.base"),
        (
            "url: https://mirror.example.org",
            "url: ftp://mirror.example.org",
            "registries['registry.k8s.io'].url",
        ),
        (
            "https://vault.example.org/RPM-GPG-KEY",
            "https://vault.example.org:99999/K",
            "yum.base.gpgkeys[0].url",
        ),
        ("https://example.org/cri-tools", "https://exa mple.org/cri-tools", "releases.crictl.url"),
    ],
)
def test_malformed_url_names_file_and_key(tmp_path, old, new, key):
    assert old in MINIMAL
    path = write(tmp_path, MINIMAL.replace(old, new, 1))
    with pytest.raises(MirrorPresetError, match="malformed URL") as info:
        load_preset(path)
    assert str(path) in str(info.value)
    assert info.value.key == key
    assert info.value.line is not None


@pytest.mark.parametrize(
    "old, new, key, words",
    [
        ("F4A8 0EB5", "F4A8 0EB", "yum.base.gpgkeys[0].fingerprint", "40 hex"),
        ("F4A8 0EB5", "F4A8 0EBZ", "yum.base.gpgkeys[0].fingerprint", "40 hex"),
        (
            "    gpgkeys:\n      - url: https://vault.example.org/RPM-GPG-KEY\n"
            "        fingerprint: 6341 AB27 53D7 8A78 A7C2 7BB1 24C6 A8A7 F4A8 0EB5\n",
            "",
            "yum.base.gpgkeys",
            "missing",
        ),
        ("kubernetes:\n  base: https://dl.example.org/\n", "", "kubernetes", "missing"),
        ("{version}/crictl-{version}", "{ver}/crictl", "releases.crictl.url", "{version}"),
        ("    insecure: true\n", "", "registries['docker.io'].url", "insecure: true"),
        (
            "namespace: google_containers",
            "namespace: Bad Space",
            "registries['registry.k8s.io'].namespace",
            "bad namespace",
        ),
        (
            "flatten: [coredns/coredns]",
            "flatten: [coredns]",
            "registries['registry.k8s.io'].flatten[0]",
            "repository path",
        ),
        (
            "      password_env: HUB_PASSWORD\n",
            "",
            "registries['docker.io'].credentials",
            "together",
        ),
    ],
)
def test_bad_values_are_refused(tmp_path, old, new, key, words):
    assert old in MINIMAL
    with pytest.raises(MirrorPresetError) as info:
        load_preset(write(tmp_path, MINIMAL.replace(old, new, 1)))
    assert info.value.key == key
    assert words in str(info.value)


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(MirrorPresetError, match=r"x\.yaml:2: not valid YAML"):
        parse_preset("name: a\n  - b: [\n", "x.yaml")
    with pytest.raises(MirrorPresetError, match="cannot read mirror preset"):
        load_preset(tmp_path / "absent.yaml")
    with pytest.raises(MirrorPresetError, match="must be a mapping"):
        parse_preset("- a\n", "x.yaml")


def test_preset_objects_are_immutable(tmp_path):
    preset = load_preset(write(tmp_path, MINIMAL))
    with pytest.raises(AttributeError):
        preset.yum["base"].baseurl = "https://evil.example/"
    assert preset.yum["base"].baseurl.endswith("/x86_64/")


@pytest.mark.parametrize(
    "old, new, key, words",
    [
        (
            "baseurl: https://vault.example.org",
            "baseurl: https://bob:hunter22@vault.example.org",
            "yum.base.baseurl",
            "netrc",
        ),
        (
            "url: https://vault.example.org/RPM",
            "url: https://bob:hunter22@vault.example.org/RPM",
            "yum.base.gpgkeys[0].url",
            "netrc",
        ),
        ("https://dl.example.org/", "https://hunter22@dl.example.org/", "kubernetes.base", "netrc"),
        (
            "https://example.org/cri-tools",
            "https://bob:hunter22@example.org/cri-tools",
            "releases.crictl.url",
            "netrc",
        ),
        (
            "url: https://mirror.example.org",
            "url: https://bob:hunter22@mirror.example.org",
            "registries['registry.k8s.io'].url",
            "credentials:",
        ),
    ],
)
def test_credentials_in_a_mirror_url_are_refused(tmp_path, old, new, key, words):
    """Credentials in a URL would be written into the lock and every bundle.json."""
    assert old in MINIMAL
    with pytest.raises(MirrorPresetError) as info:
        load_preset(write(tmp_path, MINIMAL.replace(old, new, 1)))
    assert info.value.key == key and "credentials in a URL are refused" in str(info.value)
    assert "hunter22" not in info.value.diagnostics() and "//***@" in info.value.message
    assert words in info.value.hint and "docs/mirrors.md" in info.value.hint
