"""bundle.json's sections have one owner (installer/format/bundleinfo.py): the builder writes
them with to_json(), every reader reads them with read_sections(), and a section of the wrong
type is refused naming its key."""

import pytest

from installer.format.bundleinfo import (
    IMAGE_ARCHIVE,
    AssumedBase,
    BundleAddon,
    BundleImage,
    BundleSections,
    Repo,
    Role,
    Runtime,
    Target,
    read_info,
    read_sections,
)
from installer.format.errors import VerificationError
from installer.format.manifest import BundleManifest, FileEntry

SECTIONS = BundleSections(
    target=Target("rocky", "9.4", "x86_64", ("@core",), ("almalinux", "rhel")),
    kubernetes_version="v1.30.5",
    runtime=Runtime("containerd", "1.7.22"),
    assumed_base=AssumedBase("group", "@core from baseos", ("bash-5.1.8-9.el9.x86_64",)),
    roles={"worker": Role(("containerd.io",), ("registry.k8s.io/pause:3.9",))},
    kubeadm_images=("registry.k8s.io/pause:3.9",),
    pause_image="registry.k8s.io/pause:3.9",
    remove_packages=("podman", "runc"),
    images=(BundleImage("registry.k8s.io/pause:3.9", "sha256:" + "c" * 64, 300, ("worker",),
                        "linux/amd64", "sha256:" + "m" * 64, ("sha256:" + "l" * 64,)),),
    image_archive=IMAGE_ARCHIVE,
    repo=Repo("repo", ("repo/RPM-GPG-KEY-Rocky-9",)),
    addons={"flannel": BundleAddon("v0.25.7", ("docker.io/flannel/flannel:v0.25.7",),
                                   "addons/flannel/kube-flannel.yml", "10.244.0.0/16"),
            "calico": BundleAddon("v3.28.0", ())},
)


def test_what_is_written_reads_back_the_same():
    document = SECTIONS.to_json()
    assert read_sections(document) == SECTIONS
    assert read_sections(document).to_json() == document
    assert "manifest" not in document["addons"]["calico"]  # absent, not null
    plain = SECTIONS._replace(target=SECTIONS.target._replace(hosts=()), remove_packages=())
    assert "hosts" not in plain.to_json()["target"] and "remove_packages" not in plain.to_json()


def test_absent_sections_read_as_empty():
    sections = read_sections({})
    assert sections.roles == {} and sections.images == () and sections.addons == {}
    assert sections.image_archive == IMAGE_ARCHIVE and sections.target is None


@pytest.mark.parametrize("change, key", [
    ({"roles": {"worker": {"packages": "docker-ce"}}}, "roles.worker.packages"),
    ({"images": [{"reference": "x"}]}, "images[0].config_digest"),
    ({"addons": {"flannel": {"manifest": 5}}}, "addons.flannel.manifest"),
    ({"runtime": 7}, "runtime"),
    ({"image_archive": ["images/images.tar"]}, "image_archive"),
])
def test_a_section_of_the_wrong_type_is_refused_naming_the_key(change, key):
    document = dict(SECTIONS.to_json(), **change)
    with pytest.raises(VerificationError, match="bundle.json: " + key.replace("[", r"\[")):
        read_sections(document)


def test_the_installer_reads_the_addons_and_needs_the_target():
    files = (FileEntry("addons/flannel/kube-flannel.yml", 1, 0o644, "a" * 64),
             FileEntry("repo/RPM-GPG-KEY-Rocky-9", 1, 0o644, "b" * 64))
    manifest = BundleManifest(1, "k8s", 0, files, SECTIONS.to_json())
    info = read_info(manifest, "d" * 64)
    assert info.addons["flannel"].manifest == "addons/flannel/kube-flannel.yml"
    assert info.runtime == "containerd" and info.major_release == "9"
    assert info.hosts == ("almalinux", "rhel") and info.remove_packages == ("podman", "runc")
    assert info.images_for("worker")[0].image_id == "sha256:" + "c" * 64
    without = dict(SECTIONS.to_json())
    del without["target"]
    with pytest.raises(VerificationError, match="bundle.json: target: missing"):
        read_info(manifest._replace(data=without), "d" * 64)
