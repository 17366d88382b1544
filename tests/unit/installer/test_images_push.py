"""`images push FILE.tar` on small hand-made tars of both shapes (docker save's and an OCI
layout): what lands in the registry storage, what the user is told (the other control planes
that still need the push), and every refusal with its exit code: a damaged or changed tar
naming the member with the storage untouched, a worker, a Docker cluster, images.mode archive,
a file that is not a tar. The real docker-registry and containerd judge a pushed image in
tests/integration/test_images_push.py."""

import gzip
import hashlib
import io
import json
import tarfile
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from installer import cli, registrypeers, registrystore
from installer.format.bundleinfo import BundleImage
from installer.format.errors import ExitCode
from installer.format.manifest import FORMAT_VERSION
from tests.unit.installer.test_bundleinfo import SECTIONS

CLUSTER = """\
control_plane: {vip: 10.0.0.100}
networking: {pod_cidr: 10.244.0.0/16}
load_balancer: {mode: services, interface: eth0, router_id: 51, auth_pass: k8sVIP42}
images: {mode: registry}
nodes:
  - {name: cp1, address: 10.0.0.11, role: control-plane}
  - {name: cp2, address: 10.0.0.12, role: control-plane}
  - {name: cp3, address: 10.0.0.13, role: control-plane}
  - {name: w1, address: 10.0.0.21, role: worker}
"""
DIGEST = "d" * 64
BUNDLED = ("registry.k8s.io/pause:3.9", "docker.io/flannel/flannel:v0.25.7",
           "docker.io/library/registry:2.8.3")


def sha(data):
    return hashlib.sha256(data).hexdigest()


def layer(files):
    """An uncompressed layer tar holding `files` (name -> bytes)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def config(layers):
    return json.dumps({"architecture": "amd64", "os": "linux",
                       "config": {"Cmd": ["/app"]},
                       "rootfs": {"type": "layers",
                                  "diff_ids": ["sha256:" + sha(x) for x in layers]}}).encode()


def write_tar(path, members, gz=False):
    """A tar of (name, bytes) members in order, as Go's archive/tar writes them."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def docker_save(path, tags=("docker.io/acme/app:1.0",), files=None, gz=False):
    """The shape `docker save` of Docker 20.10 writes: <config hex>.json, <id>/layer.tar,
    <id>/VERSION, <id>/json, manifest.json, repositories (sorted)."""
    layers = [layer(files or {"app": b"#!/bin/sh\necho app\n"}), layer({"etc/app.conf": b"x"})]
    conf = config(layers)
    ids = [sha(b"id" + x) for x in layers]
    members = [(sha(conf) + ".json", conf)]
    for ident, data in sorted(zip(ids, layers)):
        members += [(ident + "/VERSION", b"1.0"), (ident + "/json", b"{}"),
                    (ident + "/layer.tar", data)]
    manifest = [{"Config": sha(conf) + ".json", "RepoTags": list(tags),
                 "Layers": [i + "/layer.tar" for i in ids]}]
    members += [("manifest.json", json.dumps(manifest).encode()), ("repositories", b"{}")]
    return write_tar(path, members, gz)


def oci_image(layers, annotation, name):
    """An OCI image of `layers`: (index.json's bytes, its blobs: manifest, config, layers)."""
    conf = config(layers)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + sha(conf), "size": len(conf)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + sha(x), "size": len(x)} for x in layers]}).encode()
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + sha(manifest), "size": len(manifest),
        "annotations": {annotation: name}}]}
    return json.dumps(index).encode(), [manifest, conf] + layers


def oci_archive(path, name="docker.io/acme/web:2.0", annotation="io.containerd.image.name"):
    """An OCI layout tar, as `skopeo copy ... oci-archive:` and `ctr images export` write."""
    index, blobs = oci_image([layer({"web": b"web"})], annotation, name)
    members = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
    members += [("blobs/sha256/" + sha(x), x) for x in blobs]
    return write_tar(path, members)


def control_plane(tmp_path, node="cp1", role="control-plane", runtime="containerd",
                  cluster=CLUSTER):
    """A root as install leaves a control plane in images.mode registry; returns it."""
    root = tmp_path / node
    (root / "var/lib/kubecrate/registry").mkdir(parents=True)
    (tmp_path / "cluster.yaml").write_text(cluster)
    images = tuple(BundleImage(ref, "sha256:" + "c" * 64, 1, ("control-plane",), "linux/amd64",
                               "sha256:" + sha(ref.encode()), ()) for ref in BUNDLED)
    sections = SECTIONS._replace(images=images,
                                 runtime=SECTIONS.runtime._replace(name=runtime))
    bundle = root / "var/lib/kubecrate/bundles" / DIGEST
    bundle.mkdir(parents=True)
    (bundle / "bundle.json").write_text(json.dumps(dict(
        sections.to_json(), format_version=FORMAT_VERSION, name="k8s", created=0, files=[])))
    (root / "var/lib/kubecrate/state.json").write_text(json.dumps({
        "version": 1, "bundle": DIGEST, "node": node, "role": role,
        "cluster": str(tmp_path / "cluster.yaml"), "steps": {}}))
    return root


@pytest.fixture(autouse=True)
def peers(monkeypatch):
    """The other control planes' registries, as registrypeers asks them: address ->
    reference -> the digest served ('' for 404); an address not listed does not answer."""
    served = {}

    def answer(address, reference, ca_file, port=8009, timeout=3.0):
        assert ca_file.endswith("/etc/kubernetes/pki/ca.crt") and port == 8009
        return served[address].get(reference, "") if address in served else None
    monkeypatch.setattr(registrypeers, "served_digest", answer)
    return served


def push(capfd, root, tar):
    """`images push` in-process, as a user runs it: its exit code and what it printed."""
    with pytest.raises(SystemExit) as done:
        cli.main(["images", "push", str(tar), "--root", str(root)])
    out, err = capfd.readouterr()
    return SimpleNamespace(exit_code=done.value.code or 0, output=out + err)


def files(root):
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted((root / "var/lib/kubecrate/registry").rglob("*")) if p.is_file()}


def test_a_docker_save_tar_is_served_and_the_other_control_planes_are_named(capfd, tmp_path,
                                                                           peers):
    root = control_plane(tmp_path)
    tar = docker_save(tmp_path / "app.tar", tags=("docker.io/acme/app:1.0", "nginx:1.25"))
    peers["10.0.0.12"] = {}  # cp2 answers 404; cp3 does not answer
    done = push(capfd, root, tar)
    assert done.exit_code == 0, done.output
    storage = str(root / "var/lib/kubecrate/registry")
    manifest = registrystore.tag_link(storage, "docker.io/acme/app:1.0")
    assert "pushed docker.io/acme/app:1.0 ({})".format(manifest) in done.output
    # a Docker Hub short name is stored as containerd resolves it
    assert registrystore.tag_link(storage, "docker.io/library/nginx:1.25") == manifest
    said = " ".join(done.output.split())
    assert "this control plane (cp1, 10.0.0.11) serves them now." in said
    assert "cp2 (10.0.0.12): lacks docker.io/acme/app:1.0, docker.io/library/nginx:1.25" in said
    assert "cp3 (10.0.0.13): its registry does not answer on port 8009" in said
    assert "images push {}` on cp2 (10.0.0.12), cp3 (10.0.0.13) too before pods use them" \
        .format(tar) in said
    body = json.loads(open(registrystore.blob_path(storage, manifest[7:]), "rb").read())
    assert body["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    for part in [body["config"]] + body["layers"]:  # every blob the manifest names is there
        data = open(registrystore.blob_path(storage, part["digest"][7:]), "rb").read()
        assert "sha256:" + sha(data) == part["digest"] and len(data) == part["size"]
    assert not [n for n in files(root) if ".kubecrate-push." in n]
    # pushed there too: nothing left to do
    peers.update({"10.0.0.12": {"docker.io/acme/app:1.0": manifest,
                                "docker.io/library/nginx:1.25": manifest}})
    peers["10.0.0.13"] = peers["10.0.0.12"]
    again = push(capfd, root, tar)
    assert again.exit_code == 0 and "already served: docker.io/acme/app:1.0" in again.output
    assert "cp3 (10.0.0.13): serves them too" in again.output
    assert "every control plane serves them." in again.output and "Run `" not in again.output


def test_an_oci_layout_tar_and_a_gzipped_docker_save_are_pushed(capfd, tmp_path):
    root = control_plane(tmp_path)
    assert push(capfd, root, oci_archive(tmp_path / "web.tar")).exit_code == 0
    assert push(capfd, root, docker_save(tmp_path / "app.tar.gz", gz=True)).exit_code == 0
    storage = str(root / "var/lib/kubecrate/registry")
    assert registrystore.tag_link(storage, "docker.io/acme/web:2.0")
    assert registrystore.tag_link(storage, "docker.io/acme/app:1.0")


def _flip(tar, member):
    data = bytearray(tar.read_bytes())
    at = data.index(member.encode())
    at = (at // 512 + 1) * 512  # past its header: inside its data
    data[at + 3] ^= 0xFF
    tar.write_bytes(bytes(data))


def test_a_changed_or_truncated_tar_is_refused_naming_the_member_and_nothing_changes(
        capfd, tmp_path):
    root = control_plane(tmp_path)
    assert push(capfd, root, oci_archive(tmp_path / "web.tar")).exit_code == 0
    before = files(root)
    tar = docker_save(tmp_path / "app.tar")
    member = next(n for n in tarfile.open(tar).getnames() if n.endswith("/layer.tar"))
    _flip(tar, member)
    done = push(capfd, root, tar)
    assert done.exit_code == ExitCode.VERIFY_FAILED, done.output
    said = " ".join(done.output.split())
    assert "{}: member {} (layer".format(tar, member) in said and "hashes to sha256:" in said
    assert files(root) == before
    whole = docker_save(tmp_path / "whole.tar").read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[:len(whole) // 2])
    done = push(capfd, root, cut)
    assert done.exit_code == ExitCode.VERIFY_FAILED, done.output
    said = " ".join(done.output.split())
    assert "{}: damaged or truncated at member ".format(cut) in said
    assert "the tar is cut short" in said and "bundle" not in said
    assert files(root) == before


@pytest.mark.parametrize("where, message", [
    (dict(node="w1", role="worker"), "w1 is a worker: only the control planes serve the "
     "registry"),
    (dict(runtime="docker"), "cp1 runs Docker (bundle k8s): there is no registry to push to"),
    (dict(cluster=CLUSTER.replace("{mode: registry}", "{mode: archive}")),
     "images.mode is archive"),
])
def test_refused_where_no_registry_is_pushed_to(capfd, tmp_path, where, message):
    root = control_plane(tmp_path, **where)
    done = push(capfd, root, docker_save(tmp_path / "app.tar"))
    assert done.exit_code == ExitCode.PRECONDITION, done.output
    assert message in " ".join(done.output.split())
    if "worker" in message:
        assert "cp1 (10.0.0.11), cp2 (10.0.0.12), cp3 (10.0.0.13)" in done.output


def test_a_file_that_is_not_an_image_tar_or_names_no_served_image_is_refused(capfd, tmp_path):
    root = control_plane(tmp_path)
    text = tmp_path / "app.txt"
    text.write_text("not a tar\n" * 100)
    done = push(capfd, root, text)
    assert done.exit_code == ExitCode.USAGE
    assert "{} is not a tar archive".format(text) in done.output and "docker save" in \
        done.output
    other = push(capfd, root, docker_save(tmp_path / "q.tar", tags=("quay.io/acme/app:1",)))
    assert other.exit_code == ExitCode.USAGE
    assert "quay.io/acme/app:1 is under quay.io, and containerd on the nodes pulls only the " \
        "images of docker.io, registry.k8s.io" in " ".join(other.output.split())
    tagless = push(capfd, root, oci_archive(tmp_path / "t.tar", name="latest",
                                     annotation="org.opencontainers.image.ref.name"))
    assert tagless.exit_code == ExitCode.VERIFY_FAILED
    assert "names no image" in tagless.output and "oci-archive:FILE.tar:NAME:TAG" in \
        tagless.output
    bundled = push(capfd, root, docker_save(tmp_path / "p.tar",
                                            tags=("registry.k8s.io/pause:3.9",)))
    assert bundled.exit_code == ExitCode.USAGE and "one of the bundle's images" in \
        bundled.output
    assert not [n for n in files(root) if "repositories" in n]


def test_help_teaches_how_to_make_the_tar_and_where_to_run_it():
    out = CliRunner().invoke(cli.cli, ["images", "push", "--help"]).output
    assert "docker save docker.io/acme/app:1.0 -o app.tar" in out
    assert "oci-archive:app.tar:docker.io/acme/app:1.0" in out
    assert "run the same command on every control plane" in " ".join(out.split())
    assert "exit 3" in out and "exit 4" in out


def test_dry_run_checks_the_tar_and_changes_nothing(capfd, tmp_path):
    root = control_plane(tmp_path)
    with pytest.raises(SystemExit) as done:
        cli.main(["images", "push", str(docker_save(tmp_path / "app.tar")), "--root", str(root),
                  "--dry-run"])
    out, err = capfd.readouterr()
    assert done.value.code in (0, None), err
    assert out.startswith("would push docker.io/acme/app:1.0 (sha256:")
    assert files(root) == {}
