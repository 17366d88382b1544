"""Registry storage fed from the bundle's image archive (installer/registrystore.py), judged by
the real readers: the Debian `docker-registry` (distribution 2.8, the process of the
distribution image the control planes run in `images.mode: registry`) serves it over TLS with
a CA made here by openssl, and containerd 1.6 pulls the worker's images through the
hosts.toml files registrystore writes (`ctr images pull --hosts-dir`, the same resolver that
CRI's `config_path` uses), trusting that CA."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests
import yaml
from lab.runtimes import private_containerd
from lab.tools import require_tool

from installer.registrystore import CERTS_D, feed, hosts_toml, split_reference
from installer.steps import runtime
from tests.unit.installer.test_registry_mode import REGISTRY, _runtime_ctx

pytestmark = pytest.mark.integration

ADDRESS = "127.0.0.1:5452"  # this helper's port (docs/testing.md)
WORKER = ["docker.io/flannel/flannel:v0.22.3", "registry.k8s.io/kube-proxy:v1.23.17",
          "registry.k8s.io/pause:3.6"]
NAMESPACE = "kc-registry-store"
START_TIMEOUT = 20.0


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([require_tool("openssl"), *args], cwd=cwd, check=True, timeout=60,
                   capture_output=True)


def _pki(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.crt, server.crt, key)."""
    folder.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", "/CN=kubecrate test registry CA", cwd=folder)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=127.0.0.1", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n"
                                    "extendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext",
             cwd=folder)
    return folder / "ca.crt", folder / "server.crt", folder / "server.key"


@contextlib.contextmanager
def serving(storage: Path, folder: Path, address: str = ADDRESS) -> Iterator[tuple[Path, Path]]:
    """The Debian docker-registry on `address` over TLS, serving the filesystem storage
    `storage` as the control planes' kubecrate-registry does; yields (CA file, log file)."""
    ca, cert, key = _pki(folder / "pki")
    config = folder / "config.yml"
    config.write_text(yaml.safe_dump({
        "version": "0.1",
        "log": {"level": "info", "formatter": "text"},
        "storage": {"filesystem": {"rootdirectory": str(storage)},
                    "delete": {"enabled": False}},
        "http": {"addr": address, "secret": "kubecrate-test",
                 "tls": {"certificate": str(cert), "key": str(key)}},
    }))
    log = folder / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([require_tool("docker-registry"), "serve", str(config)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env={"PATH": "/usr/bin:/bin"})
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if requests.get(f"https://{address}/v2/", verify=str(ca), timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, \
                "docker-registry did not answer on {}:\n{}".format(address, log.read_text())
            time.sleep(0.1)
        yield ca, log
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def registry(archive, tmp_path):
    """docker-registry on ADDRESS over TLS, serving storage that feed() wrote from the
    archive; yields (CA file, log file, the images fed)."""
    storage = tmp_path / "storage"
    fed = feed(str(archive.path), str(storage), WORKER)
    with serving(storage, tmp_path) as (ca, log):
        yield ca, log, fed


def test_containerd_pulls_the_fed_images_through_hosts_toml_and_nothing_else(containerd, registry,
                                                                           tmp_path):
    ca, log, fed = registry
    hosts = tmp_path / "certs.d"
    for reg in sorted({split_reference(ref)[0] for ref in WORKER}):
        (hosts / reg).mkdir(parents=True)
        (hosts / reg / "hosts.toml").write_text(hosts_toml(reg, f"https://{ADDRESS}", str(ca)))
    try:
        for ref in WORKER:
            containerd.ctr("images", "pull", "--hosts-dir", str(hosts), ref,
                           namespace=NAMESPACE)
        listed = containerd.ctr("images", "ls", namespace=NAMESPACE, text=True).stdout
        for image in fed:  # the manifest the registry served is the one in the archive
            row = next(line for line in listed.splitlines() if line.startswith(image.reference))
            assert image.manifest_digest in row.split()
        served = log.read_text()
        assert "/v2/registry.k8s.io/pause/manifests/3.6" in served
        assert "/v2/docker.io/flannel/flannel/manifests/v0.22.3" in served
        # only what was fed: the control plane's images are not there
        answer = requests.get(f"https://{ADDRESS}/v2/registry.k8s.io/coredns/coredns/manifests/"
                              "v1.8.6", verify=str(ca), timeout=5)
        assert answer.status_code == 404
    finally:
        refs = containerd.references(namespace=NAMESPACE)
        if refs:
            containerd.ctr("images", "rm", "--sync", *refs, namespace=NAMESPACE)



def test_containerd_runs_its_cri_plugin_on_the_registry_mode_config(tmp_path):
    """The config.toml the runtime step writes in images.mode registry (config_path, no
    `mirrors`): containerd 1.6 starts its CRI plugin on it and reads its registries from
    CERTS_D (the CRI plugin refuses `mirrors` beside config_path)."""
    config = tmp_path / "config.toml"
    config.write_text(runtime.containerd_config(_runtime_ctx(tmp_path / "host", REGISTRY)))
    with private_containerd(config) as daemon:
        plugins = daemon.run("plugins", "ls", text=True).stdout
        assert re.search(r"io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok", plugins), plugins
        assert f"ConfigPath:{CERTS_D}" in daemon.log.read_text(), daemon.log_tail()
