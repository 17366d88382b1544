"""`images push FILE.tar` judged by the real tools: Docker 20.10's `docker save` and skopeo
make the tars (docker-archive and oci-archive, as a user makes them on a connected machine),
the installer .pyz pushes them on
CPython 3.6.15 into a control plane's registry storage while the Debian docker-registry
(distribution 2.8, the control planes' kubecrate-registry process) already serves that
storage, and containerd 1.6 pulls them through the hosts.toml the runtime step writes, as a
node's CRI does (`ctr images pull --hosts-dir`). A changed tar leaves nothing to pull."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests
from lab import py36
from lab.tools import require_tool

from installer import registrystore
from installer.registrypeers import served_digest
from installer.registrystore import hosts_toml
from tests.integration.builder.registry.test_registry_store import serving
from tests.unit.installer.test_images_push import (
    CLUSTER,
    _flip,
    control_plane,
    layer,
    oci_image,
    sha,
)

pytestmark = pytest.mark.integration

ADDRESS = "127.0.0.1:18201"  # this test's port (docs/testing.md)
NAMESPACE = "kc-images-push"


def _oci_dir(folder: Path) -> Path:
    """A one-image OCI layout folder, the source skopeo copies from."""
    index, blobs = oci_image([layer({"app": b"#!/bin/sh\necho pushed\n"}),
                              layer({"etc/app.conf": b"v=1\n"})],
                             "org.opencontainers.image.ref.name", "app")
    (folder / "blobs/sha256").mkdir(parents=True)
    for blob in blobs:
        (folder / "blobs/sha256" / sha(blob)).write_bytes(blob)
    (folder / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (folder / "index.json").write_bytes(index)
    return folder


def certifi_like(folder: Path) -> str:
    """A CA that signed nothing here."""
    other = folder / "other-ca"
    other.mkdir()
    subprocess.run([require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(other / "ca.key"), "-out", str(other / "ca.crt"), "-days",
                    "2", "-subj", "/CN=another CA"], check=True, capture_output=True, timeout=60)
    return str(other / "ca.crt")


def _skopeo(source: Path, destination: str) -> None:
    subprocess.run([require_tool("skopeo"), "--insecure-policy", "copy", "--quiet",
                    f"oci:{source}:app", destination], check=True, timeout=120,
                   capture_output=True)


def _push(pyz: Path, root: Path, tar: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(py36.python36()), str(pyz), "images", "push", str(tar),
                           "--root", str(root)], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C"})


def test_docker_saves_and_skopeos_tars_are_pushed_by_the_pyz_and_containerd_pulls_them(
        tmp_path, installer_pyz, containerd, dockerd):
    source = _oci_dir(tmp_path / "oci")
    archive, oci, saved = tmp_path / "app.tar", tmp_path / "web.tar", tmp_path / "saved.tar"
    _skopeo(source, f"docker-archive:{archive}:docker.io/acme/app:1.0")
    _skopeo(source, f"oci-archive:{oci}:docker.io/acme/web:2.0")
    # what a user runs on a connected machine with Docker 20.10
    dockerd.run("load", "-i", str(archive))
    dockerd.run("tag", "docker.io/acme/app:1.0", "docker.io/acme/saved:3.0")
    dockerd.run("save", "docker.io/acme/saved:3.0", "-o", str(saved))
    dockerd.run("rmi", "docker.io/acme/app:1.0", "docker.io/acme/saved:3.0")
    # cp2 and cp3 on loopback addresses where nothing listens: refused at once
    root = control_plane(tmp_path, cluster=CLUSTER.replace("10.0.0.", "127.0.0."))
    storage = root / "var/lib/kubecrate/registry"
    with serving(storage, tmp_path, ADDRESS) as (ca, log):
        changed = tmp_path / "changed.tar"
        changed.write_bytes(archive.read_bytes())
        _flip(changed, sha(layer({"etc/app.conf": b"v=1\n"})) + ".tar")
        refused = _push(installer_pyz, root, changed)
        assert refused.returncode == 3, refused.stderr
        assert f"{changed}: member " in refused.stderr and "hashes to sha256:" in refused.stderr
        assert not list(storage.rglob("link")) and not list(storage.glob(".kubecrate-push.*"))

        for tar in (archive, oci, saved):
            done = _push(installer_pyz, root, tar)
            assert done.returncode == 0, done.stderr
            said = " ".join(done.stdout.split())
            assert "cp2 (127.0.0.12): its registry does not answer on port 8009" in said
            assert "on cp2 (127.0.0.12), cp3 (127.0.0.13) too before pods use it" in said
        hosts = tmp_path / "certs.d" / "docker.io"
        hosts.mkdir(parents=True)
        (hosts / "hosts.toml").write_text(hosts_toml("docker.io", f"https://{ADDRESS}",
                                                     str(ca)))
        try:
            for ref in ("docker.io/acme/app:1.0", "docker.io/acme/web:2.0",
                        "docker.io/acme/saved:3.0"):
                containerd.ctr("images", "pull", "--hosts-dir", str(tmp_path / "certs.d"),
                               ref, namespace=NAMESPACE)
                served = requests.get(
                    "https://{}/v2/{}/manifests/{}".format(ADDRESS, *ref.split(":")),
                    verify=str(ca), timeout=5, headers={"Accept": ", ".join((
                        "application/vnd.docker.distribution.manifest.v2+json",
                        "application/vnd.oci.image.manifest.v1+json"))})
                assert served.ok, (ref, served.status_code)
                listed = containerd.ctr("images", "ls", namespace=NAMESPACE,
                                        text=True).stdout
                row = next(line for line in listed.splitlines() if line.startswith(ref))
                assert served.headers["Docker-Content-Digest"] in row.split(), listed
            assert "/v2/docker.io/acme/app/manifests/1.0" in log.read_text()
            # what push asks the other control planes, asked of this registry
            host, port = ADDRESS.split(":")
            pushed = registrystore.tag_link(str(storage), "docker.io/acme/app:1.0")
            assert served_digest(host, "docker.io/acme/app:1.0", str(ca), int(port)) == pushed
            assert served_digest(host, "docker.io/acme/app:9.9", str(ca), int(port)) == ""
            assert served_digest(host, "docker.io/acme/app:1.0", certifi_like(tmp_path),
                                 int(port)) is None  # another CA: not trusted, no answer
        finally:
            refs = containerd.references(namespace=NAMESPACE)
            if refs:
                containerd.ctr("images", "rm", "--sync", *refs, namespace=NAMESPACE)
