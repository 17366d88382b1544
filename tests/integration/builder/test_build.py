"""`kubecrate build` from the mirror world, judged by minisign, the installer .pyz itself, the
servers' request logs and `kubecrate lint`; and the failures a user meets, each naming its
culprit and leaving the output folder as it was.

The primary recipe is built twice per module (cold cache, then warm) and the results reused.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from lab import py36
from lab.bundles import REPO, make_key, manifest_of
from lab.tools import require_tool

from builder import zipapp
from builder.cache import Cache
from builder.inputs.lockfile import dump_lock, load_lock
from builder.inputs.mirrors import load_preset
from installer.format.bundleinfo import read_sections
from installer.format.imagearchive import DOCKER_MANIFEST_NAME, INDEX_NAME, list_images
from installer.format.manifest import MANIFEST_NAME

pytestmark = pytest.mark.integration

RECIPE = REPO / "manifests" / "k8s-1.23.17-el7.yaml"
NAME = "k8s-1.23.17-el7"
USER_AGENT = "kubecrate/"
OUTPUTS = (f"{NAME}.tar", f"{NAME}.tar.minisig", zipapp.INSTALLER_NAME,
           zipapp.INSTALLER_NAME + ".minisig")
DROPPED = "registry.k8s.io/etcd:3.5.6-0"  # control-plane only: lint must miss it


def kubecrate(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    """The real command line, in a child process (exit codes and stderr as users see them)."""
    return subprocess.run([sys.executable, "-c", "from builder.cli import main; main()",
                           *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def log_files(world) -> list[Path]:
    logs = [world.access_log]
    logs += [Path(i["log"]) for i in world.state["registry"]["instances"].values() if i.get("log")]
    return logs


def build_requests(world) -> int:
    """Requests a kubecrate build made so far, from nginx's and every registry's log."""
    return sum(line.count(USER_AGENT) for path in log_files(world) if path.exists()
               for line in path.read_text(errors="replace").splitlines())


def seeded_cache(folder: Path) -> Path:
    """An empty download cache, except for the installer's pinned wheels (from PyPI once)."""
    shared = Cache()
    own = Cache(folder)
    for pin in zipapp.load_pins():
        if shared.has(pin.sha256):
            target = own.path(pin.sha256)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shared.path(pin.sha256), target)
    return folder


@pytest.fixture(scope="module")
def world_build(mirror_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    _key, secret, public = make_key(root / "keys")
    cache = seeded_cache(root / "cache")
    lock = root / f"{NAME}.lock"
    runs = []
    # cold cache; warm cache into a new folder; the same lock into the cold build's folder
    # (kept as it is); into the warm build's folder after its bundle was tampered with
    for name, out in (("cold", "cold"), ("warm", "warm"), ("rebuild", "cold"),
                      ("tampered", "warm")):
        if name == "tampered":
            with open(root / out / f"{NAME}.tar", "r+b") as bundle:
                bundle.seek(100_000)
                byte = bundle.read(1)
                bundle.seek(100_000)
                bundle.write(bytes([byte[0] ^ 1]))
        before = build_requests(mirror_world)
        files = {n: os.stat(root / out / n) for n in OUTPUTS if (root / out / n).exists()}
        done = kubecrate("build", RECIPE, "--mirrors", mirror_world.preset, "--key", secret,
                         "--out", root / out, "--lock", lock, "--cache", cache)
        assert done.returncode == 0, done.stderr
        runs.append({"out": root / out, "requests": build_requests(mirror_world) - before,
                     "stdout": done.stdout, "stderr": done.stderr, "before": files,
                     "after": {n: os.stat(root / out / n) for n in OUTPUTS}})
    return {"root": root, "secret": secret, "public": public, "cache": cache, "lock": lock,
            "cold": runs[0], "warm": runs[1], "rebuild": runs[2], "tampered": runs[3],
            "preset": mirror_world.preset}


# --------------------------------------------------------------------------- the artifacts


def test_minisign_accepts_bundle_and_installer(world_build):
    minisign = require_tool("minisign")
    out = world_build["cold"]["out"]
    for name in (f"{NAME}.tar", zipapp.INSTALLER_NAME):
        done = subprocess.run([minisign, "-Vm", out / name, "-p", world_build["public"]],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (name, done.stderr)
    assert sorted(os.listdir(out)) == sorted(OUTPUTS)


def test_the_installer_verifies_the_bundle_with_its_embedded_key(world_build, tmp_path):
    """On the hosts' Python 3.6, through the sh preamble, in a session without LANG."""
    out = world_build["cold"]["out"]
    env = py36.operator_env(py36.python3_dir(tmp_path / "py"), tmp_path,
                            SHIV_ROOT=str(tmp_path / "shiv"))
    done = subprocess.run([out / zipapp.INSTALLER_NAME, "verify", out / f"{NAME}.tar"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert world_build["cold"]["stdout"].strip() in done.stdout + done.stderr  # bundle.json


def test_the_installer_pins_the_key_that_signs_the_bundled_python3(world_build):
    """The sh preamble may import the host's vendor key only if it has this fingerprint."""
    base = load_preset(world_build["preset"]).repo("base").gpgkeys[0].fingerprint
    preamble = (world_build["cold"]["out"] / zipapp.INSTALLER_NAME).read_bytes()[:16384]
    assert f"vendor_fingerprint={base}\n".encode() in preamble


def test_bundle_json_has_what_the_installer_reads(world_build):
    with tarfile.open(world_build["cold"]["out"] / f"{NAME}.tar") as tar:
        assert tar.getnames()[0] == MANIFEST_NAME
        manifest = json.load(tar.extractfile(MANIFEST_NAME))
        names = set(tar.getnames())
    assert manifest["target"]["release"] == "7.9" and manifest["runtime"]["name"] == "docker"
    assert manifest["kubernetes_version"] == "v1.23.17"
    assert "docker-ce-20.10.24-3.el7" in manifest["roles"]["worker"]["packages"]
    assert "keepalived" in manifest["roles"]["control-plane"]["packages"]
    assert "keepalived" not in manifest["roles"]["worker"]["packages"]
    assert DROPPED in manifest["roles"]["control-plane"]["images"]
    assert DROPPED not in manifest["roles"]["worker"]["images"]
    assert manifest["pause_image"] == "registry.k8s.io/pause:3.6"
    assert {"bin/kubeadm", "bin/kubelet", "bin/kubectl", "bin/crictl-v1.23.0-linux-amd64.tar.gz",
            "bin/cni-plugins-linux-amd64-v1.1.1.tgz", manifest["image_archive"],
            "addons/flannel/kube-flannel.yml", *manifest["repo"]["gpgkeys"]} <= names
    assert any(n.startswith("repo/Packages/python3-3.6") for n in names)
    assert not any(n.startswith("repo/Packages/glibc-") for n in names)  # in @core
    assert manifest["assumed_base"]["kind"] == "group"
    components = manifest["components"]
    assert len(components["rpms"]) == len([n for n in names if n.endswith(".rpm")])
    assert all(len(c["sha256"]) == 64 for c in components["rpms"] + components["binaries"])
    assert all(i["manifest_digest"].startswith("sha256:") for i in components["images"])
    # one typed owner: what the builder wrote is exactly what its reader reads back
    sections = {k: v for k, v in manifest.items()
                if k not in ("format_version", "name", "created", "files")}
    assert read_sections(sections).to_json() == sections


def test_flannel_manifest_names_bundled_images_by_tag(world_build):
    with tarfile.open(world_build["cold"]["out"] / f"{NAME}.tar") as tar:
        text = tar.extractfile("addons/flannel/kube-flannel.yml").read().decode()
    documents = list(yaml.safe_load_all(text))
    daemonset = next(d for d in documents if d and d["kind"] == "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    images = {c["image"] for c in pod["containers"] + pod["initContainers"]}
    assert images == {"docker.io/flannel/flannel:v0.22.3",
                      "docker.io/flannel/flannel-cni-plugin:v1.2.0"}
    config = next(d for d in documents if d and d["kind"] == "ConfigMap")
    assert json.loads(config["data"]["net-conf.json"])["Network"] == "10.244.0.0/16"


def test_the_lock_has_one_typed_owner_that_reads_it_back_to_the_same_bytes(world_build):
    lock = world_build["lock"]
    assert dump_lock(load_lock(lock)) == lock.read_bytes()


def test_warm_rebuild_downloads_nothing_and_gives_the_same_bytes(world_build):
    assert world_build["cold"]["requests"] > 0  # the log counting sees a build's requests
    assert world_build["warm"]["requests"] == 0, world_build["warm"]["stderr"]
    for name in OUTPUTS:
        first = (world_build["cold"]["out"] / name).read_bytes()
        assert first == (world_build["warm"]["out"] / name).read_bytes(), name
    assert "0.0 KiB downloaded" in world_build["warm"]["stderr"]


def test_a_rebuild_from_the_same_lock_keeps_the_verified_outputs_untouched(world_build):
    """Nothing is staged, packed or written again: same inodes, same mtimes, same bytes."""
    rebuild = world_build["rebuild"]
    assert rebuild["requests"] == 0
    for name in OUTPUTS:
        before, after = rebuild["before"][name], rebuild["after"][name]
        assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
            before.st_ino, before.st_mtime_ns, before.st_size), name
    assert "kept, it matches the lock and verifies" in rebuild["stderr"]
    assert "pack" not in rebuild["stderr"].split("time", 1)[1]


def test_a_tampered_output_is_built_again_not_trusted(world_build):
    tampered = world_build["tampered"]
    assert "do not verify" in tampered["stderr"] and "kept" not in tampered["stderr"]
    bundle = f"{NAME}.tar"
    assert tampered["after"][bundle].st_ino != tampered["before"][bundle].st_ino
    for name in OUTPUTS:
        assert (world_build["cold"]["out"] / name).read_bytes() == (
            tampered["out"] / name).read_bytes(), name


def test_inspect_lists_the_bundle(world_build):
    done = kubecrate("inspect", world_build["cold"]["out"] / f"{NAME}.tar", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["name"] == NAME and summary["kubernetes_version"] == "v1.23.17"
    assert {i["reference"] for i in summary["images"]} >= {DROPPED, "registry.k8s.io/pause:3.6"}
    assert all(i["in_archive"] for i in summary["images"])
    assert {b["path"] for b in summary["binaries"]} >= {"bin/kubeadm", "bin/kubelet"}


def test_the_bundle_carries_a_signed_spdx_sbom_of_everything_it_brings(world_build, tmp_path):
    """sbom.spdx.json is a member listed in bundle.json (so signed), valid
    SPDX 2.3 by the spdx-tools validator, and names every RPM, binary, image and wheel."""
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    bundle = world_build["cold"]["out"] / f"{NAME}.tar"
    done = kubecrate("inspect", bundle, "--sbom")
    assert done.returncode == 0, done.stderr
    (tmp_path / "sbom.spdx.json").write_text(done.stdout)
    # spdx-tools' URL pattern (validation/uri_validators.py) wants a domain name with a TLD;
    # the mirror world serves from 127.0.0.1. Every problem must be exactly that, and the same
    # SBOM with the mirror's address written as a domain name must have none.
    mirror = re.compile(r"http://127\.0\.0\.1:\d+/")
    problems = [p.validation_message for p in validate_full_spdx_document(
        parse_file(str(tmp_path / "sbom.spdx.json")), "SPDX-2.3")]
    assert problems and all("download_location" in p and mirror.search(p) for p in problems), \
        [p for p in problems if not mirror.search(p)][:5]
    (tmp_path / "named.spdx.json").write_text(mirror.sub("https://mirror.example.org/",
                                                         done.stdout))
    assert validate_full_spdx_document(parse_file(str(tmp_path / "named.spdx.json")),
                                       "SPDX-2.3") == []
    sbom = json.loads(done.stdout)
    manifest = manifest_of(bundle)
    assert "sbom.spdx.json" in {f["path"] for f in manifest["files"]}
    lock = json.loads(world_build["lock"].read_text())
    purls = [ref["referenceLocator"] for p in sbom["packages"] for ref in p.get("externalRefs", [])]
    assert len([u for u in purls if u.startswith("pkg:rpm/centos/")]) == len(lock["rpms"])
    assert len([u for u in purls if u.startswith("pkg:oci/")]) == len(lock["images"])
    assert len([u for u in purls if u.startswith("pkg:generic/")]) == len(lock["binaries"])
    assert {u.split("@")[0] for u in purls if u.startswith("pkg:pypi/")} >= {
        "pkg:pypi/click", "pkg:pypi/jinja2", "pkg:pypi/pyyaml"}
    checksums = {c["checksumValue"] for p in sbom["packages"] for c in p.get("checksums", [])}
    layers = {layer["digest"].split(":")[1] for i in lock["images"] for layer in i["layers"]}
    assert layers <= checksums  # every layer digest, each once
    assert sbom["creationInfo"]["created"] == time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(lock["created"]))
    # every artifact `inspect` lists is in the SBOM
    listed = json.loads(kubecrate("inspect", bundle, "--json").stdout)
    rpms = {(p["name"], p["versionInfo"].split(":")[-1]) for p in sbom["packages"]
            if p["SPDXID"].startswith("SPDXRef-RPM-")}
    assert {(re.sub(r"-[^-]+-[^-]+$", "", n), re.search(r"([^-:]+-[^-]+)$", n).group(1))
            for n in (p["nevra"].rsplit(".", 1)[0] for p in listed["packages"])} == rpms
    assert {i["reference"] for i in listed["images"]} == {
        f'{p["name"]}:{p["versionInfo"]}' for p in sbom["packages"]
        if p["SPDXID"].startswith("SPDXRef-Image-")}
    assert len(listed["binaries"]) == len([p for p in sbom["packages"]
                                           if p["SPDXID"].startswith("SPDXRef-Binary-")])
    again = kubecrate("inspect", world_build["warm"]["out"] / f"{NAME}.tar", "--sbom")
    assert again.stdout == done.stdout  # same lock, same bytes


# --------------------------------------------------------------------------- lint


def _without_image(archive: Path, dropped: str) -> None:
    """Rewrite the image archive in place without `dropped` and its own blobs."""
    images = list_images(str(archive))
    keep = {b for i in images if i.reference != dropped for b in i.blobs}
    gone = next(i for i in images if i.reference == dropped)
    rewritten = archive.with_name("new.tar")
    with tarfile.open(archive) as old, tarfile.open(rewritten, "w",
                                                    format=tarfile.PAX_FORMAT) as new:
        for member in old.getmembers():
            data = old.extractfile(member).read() if member.isfile() else None
            if member.name == INDEX_NAME:
                index = json.loads(data)
                index["manifests"] = [d for d in index["manifests"] if dropped not in
                                      json.dumps(d.get("annotations", {}))]
                data = json.dumps(index).encode()
            elif member.name == DOCKER_MANIFEST_NAME:
                data = json.dumps([m for m in json.loads(data)
                                   if dropped not in m["RepoTags"]]).encode()
            elif member.name.rsplit("/", 1)[-1] in set(gone.blobs) - keep:
                continue
            if data is not None:
                member.size = len(data)
                new.addfile(member, io.BytesIO(data))
            else:
                new.addfile(member)
    rewritten.replace(archive)


def _resigned(world_build, tmp_path, edit) -> Path:
    """The cold build's bundle with `edit(tree)` applied, packed and signed again with the
    builder's key (as someone holding the key could)."""
    tree = tmp_path / "tree"
    with tarfile.open(world_build["cold"]["out"] / f"{NAME}.tar") as tar:
        tar.extractall(tree, filter="data")
    manifest = json.loads((tree / MANIFEST_NAME).read_text())
    (tree / MANIFEST_NAME).unlink()
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({k: v for k, v in manifest.items()
                                    if k not in ("format_version", "name", "created", "files")}))
    edit(tree)
    resigned = tmp_path / f"{NAME}.tar"
    done = kubecrate("pack", tree, "--out", resigned, "--key", world_build["secret"],
                     "--metadata", metadata, "--name", NAME)
    assert done.returncode == 0, done.stderr
    return resigned


def test_lint_names_an_image_removed_from_a_resigned_bundle(world_build, tmp_path):
    resigned = _resigned(world_build, tmp_path,
                         lambda tree: _without_image(tree / "images" / "images.tar", DROPPED))
    done = kubecrate("lint", resigned, "--key", world_build["public"])
    assert done.returncode == 1, done.stderr
    assert f"image {DROPPED} (control-plane, kubeadm) is not in images/images.tar" in done.stderr
    assert "pause" not in done.stderr
    assert kubecrate("lint", world_build["cold"]["out"] / f"{NAME}.tar").returncode == 0


def test_lint_refuses_a_manifest_that_would_reach_outside_the_bundle(world_build, tmp_path):
    """An add-on manifest edited (and re-signed) to run an image the bundle
    does not carry, or to fetch a URL, fails lint naming the file and the reference."""
    member = "addons/flannel/kube-flannel.yml"

    def edit(tree):
        text = (tree / member).read_text()
        first = re.search(r"image: (\S+)", text).group(1)
        text = text.replace("image: " + first, "image: docker.io/some/other:tag", 1)
        text = text.replace('"--kube-subnet-mgr"]', '"--kube-subnet-mgr", '
                            '"--fetch=https://get.example.com/flannel.tar.gz"]', 1)
        (tree / member).write_text(text)

    done = kubecrate("lint", _resigned(world_build, tmp_path, edit), "--key",
                     world_build["public"])
    assert done.returncode == 1, done.stderr
    assert f"add-on flannel: {member} runs docker.io/some/other:tag, which is not in the " \
           "image archive" in done.stderr
    assert f"add-on flannel: {member} names https://get.example.com/flannel.tar.gz" in \
        done.stderr


STATIC_PODS_CLUSTER = """\
cluster_name: lb
control_plane: {vip: 10.0.0.100}
networking: {pod_cidr: 10.244.0.0/16, service_cidr: 10.96.0.0/12}
load_balancer: {mode: static-pods, interface: eth0, auth_pass: kcLb01}
nodes:
  - {name: cp1, address: 10.0.0.11, role: control-plane}
"""


def test_lint_cluster_refuses_static_pods_without_the_load_balancer_images(world_build,
                                                                          tmp_path):
    """A bundle built without "@loadbalancer" is complete for itself, but not
    for a cluster.yaml in static-pods mode, whose kubelets would pull keepalived and haproxy."""
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(STATIC_PODS_CLUSTER)
    built = world_build["cold"]["out"] / f"{NAME}.tar"
    done = kubecrate("lint", built, "--cluster", cluster)
    assert done.returncode == 0, done.stderr  # the shipped recipe carries @loadbalancer

    tree = tmp_path / "tree"
    with tarfile.open(built) as tar:
        tar.extractall(tree, filter="data")
    manifest = json.loads((tree / MANIFEST_NAME).read_text())
    (tree / MANIFEST_NAME).unlink()
    keepalived = "docker.io/osixia/keepalived:2.0.20"
    roles = manifest["roles"]["control-plane"]
    roles["images"] = [ref for ref in roles["images"] if ref != keepalived]
    manifest["images"] = [i for i in manifest.get("images") or []
                          if i.get("reference") != keepalived]
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({k: v for k, v in manifest.items()
                                    if k not in ("format_version", "name", "created", "files")}))
    _without_image(tree / "images" / "images.tar", keepalived)
    without = tmp_path / f"{NAME}.tar"
    done = kubecrate("pack", tree, "--out", without, "--key", world_build["secret"],
                     "--metadata", metadata, "--name", NAME)
    assert done.returncode == 0, done.stderr
    assert kubecrate("lint", without).returncode == 0  # complete for its own role sets
    done = kubecrate("lint", without, "--cluster", cluster)
    assert done.returncode == 1, done.stderr
    assert f"image {keepalived}: load_balancer.mode static-pods runs it" in done.stderr
    assert "haproxy" not in done.stderr


# --------------------------------------------------------------------------- failures


def _recipe(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(RECIPE.read_text())
    edit(data)
    path = tmp_path / "recipe" / f"{NAME}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _failed_build(world_build, tmp_path, recipe: Path, preset=None) -> str:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier file stays")
    done = kubecrate("build", recipe, "--mirrors", preset or world_build["preset"], "--key",
                     world_build["secret"], "--out", out, "--lock", tmp_path / "x.lock",
                     "--cache", world_build["cache"])
    assert done.returncode != 0
    assert sorted(os.listdir(out)) == ["keep.txt"], "a failed build left files behind"
    return done.stderr


def test_unknown_recipe_key_fails_naming_it(world_build, tmp_path):
    recipe = _recipe(tmp_path, lambda d: d["kubernetes"].update(image_repositry="x"))
    stderr = _failed_build(world_build, tmp_path, recipe)
    assert "kubernetes.image_repositry: unknown key" in stderr
    assert "did you mean 'image_repository'" in stderr


def test_missing_package_fails_naming_it(world_build, tmp_path):
    recipe = _recipe(tmp_path, lambda d: d["packages"].append("kubecrate-no-such-package"))
    assert "no package 'kubecrate-no-such-package'" in _failed_build(world_build, tmp_path,
                                                                      recipe)


def test_missing_image_fails_naming_it(world_build, tmp_path):
    recipe = _recipe(tmp_path, lambda d: d["images"].append("docker.io/library/nosuch:1.0"))
    assert "docker.io/library/nosuch:1.0" in _failed_build(world_build, tmp_path, recipe)


def test_unreachable_mirror_fails_naming_it(world_build, tmp_path):
    preset = yaml.safe_load(Path(world_build["preset"]).read_text())
    closed = f"http://127.0.0.1:{_closed_port()}/centos/7.9.2009/updates/x86_64/"
    preset["yum"]["updates"]["baseurl"] = closed
    path = tmp_path / "closed.yaml"
    path.write_text(yaml.safe_dump(preset, sort_keys=False))
    stderr = _failed_build(world_build, tmp_path, RECIPE, preset=path)
    assert f"updates: repomd.xml: cannot fetch {closed}repodata/repomd.xml" in stderr


def test_stale_lock_fails_the_check_naming_the_change(world_build, tmp_path):
    lock = tmp_path / "x.lock"
    shutil.copyfile(world_build["lock"], lock)
    check = ("--mirrors", world_build["preset"], "--out", lock, "--cache", world_build["cache"],
             "--check")
    done = kubecrate("lock", RECIPE, *check)
    assert done.returncode == 0, done.stderr

    recipe = _recipe(tmp_path, lambda d: d["roles"]["worker"].update(packages=["ntpdate"]))
    done = kubecrate("lock", recipe, *check)
    assert done.returncode == 1
    assert f"recipe {NAME}.yaml changed" in done.stderr and "roles changed" not in done.stderr
    assert "rpms: + ntpdate-" in done.stderr

    document = json.loads(lock.read_text())
    socat = next(r for r in document["rpms"] if r["name"] == "socat")
    socat["sha256"] = "0" * 64
    lock.write_text(json.dumps(document))
    before = lock.read_bytes()
    done = kubecrate("lock", RECIPE, *check)
    assert done.returncode == 1
    assert "rpms: socat: sha256 " + "0" * 64 in done.stderr
    assert lock.read_bytes() == before  # --check writes nothing
