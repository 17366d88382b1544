"""images.mode registry end to end on one machine, with the real tools: two control planes'
registries (docker-registry 2.8, the stand-in for distribution's image) on the config.yml and
the certificate the registry step makes (installer/registryserve.py, issued by openssl against
a cluster CA), the real haproxy on the haproxy.cfg the loadbalancer step renders, and real
containerd 1.6 pulling through the hosts.toml the runtime step writes. One registry stopped,
the pulls still work through the other. The certificate (2 days here) is one the registry
step would issue again: `openssl x509 -checkend` fails within RENEW_DAYS."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import requests
from lab import hostpull, hostruntime, hostworld, lbsamples
from lab.tools import require_tool

from installer import lbconfig, registryserve
from installer.bundleserve import issue_certificate
from installer.format import lbspec
from installer.host import Host
from installer.registrystore import (
    CERTS_D,
    REGISTRY_CA,
    feed,
    hosts_files,
    hosts_toml,
    split_reference,
    tag_link,
)
from installer.runner import Runner
from installer.steps.registry import RENEW_DAYS

pytestmark = pytest.mark.integration

# this helper's ports and loopback addresses (docs/testing.md): the frontend on the "VIP"
FRONTEND, NODE_PORT, API_PORT = 5453, 5454, 5455
VIP = "127.0.0.1"
PEERS = (lbspec.Peer("cp1", "127.0.0.2"), lbspec.Peer("cp2", "127.0.0.3"))
IMAGES = ["registry.k8s.io/pause:3.6", "docker.io/flannel/flannel:v0.22.3",
          "registry.k8s.io/kube-proxy:v1.23.17"]
NAMESPACE = "kc-registry-lb"
TIMEOUT = 20.0


def _cluster_ca(folder: Path) -> None:
    pki = folder / "etc/kubernetes/pki"
    pki.mkdir(parents=True)
    subprocess.run([require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj",
                    "/CN=kubernetes"], cwd=pki, check=True, timeout=60, capture_output=True)


def _wait(what: str, ok, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not ok():
        assert proc.poll() is None and time.monotonic() < deadline, \
            "{} did not come up:\n{}".format(what, log.read_text())
        time.sleep(0.1)


def _answers(url: str, ca: Path) -> bool:
    try:
        return requests.get(url, verify=str(ca), timeout=2).ok
    except requests.RequestException:
        return False


@contextlib.contextmanager
def _started(argv: list[str], log: Path):
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env={"PATH": "/usr/bin:/bin"})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


def test_containerd_pulls_through_haproxy_from_either_control_planes_registry(
        archive, containerd, tmp_path):
    roots, registries = [], []
    _cluster_ca(tmp_path / "ca")
    ca = tmp_path / "ca/etc/kubernetes/pki/ca.crt"
    with contextlib.ExitStack() as stack:
        for peer in PEERS:  # each control plane: its own storage, certificate and registry
            root, proc = _serving(stack, tmp_path, archive, peer, IMAGES)
            cert = root / registryserve.CERT.lstrip("/")
            for seconds, code in ((3600, 0), (RENEW_DAYS * 86400, 1)):  # what the step asks
                assert subprocess.run([require_tool("openssl"), "x509", "-checkend",
                                       str(seconds), "-noout", "-in", cert],
                                      capture_output=True, timeout=30).returncode == code
            roots.append(root)
            registries.append(proc)
        frontend = _balancing(stack, tmp_path, PEERS, ca)
        hosts = tmp_path / "certs.d"
        for registry in sorted({split_reference(ref)[0] for ref in IMAGES}):
            (hosts / registry).mkdir(parents=True)
            (hosts / registry / "hosts.toml").write_text(hosts_toml(registry, frontend, str(ca)))
        try:
            containerd.ctr("images", "pull", "--hosts-dir", str(hosts), IMAGES[0],
                           namespace=NAMESPACE)
            registries[0].terminate()  # cp1's registry gone: haproxy sends every pull to cp2
            registries[0].wait(timeout=10)
            for ref in IMAGES[1:]:
                containerd.ctr("images", "pull", "--hosts-dir", str(hosts), ref,
                               namespace=NAMESPACE)
            served = (roots[1] / "registry.log").read_text()
            assert "/v2/registry.k8s.io/kube-proxy/manifests/v1.23.17" in served
            assert "/v2/docker.io/flannel/flannel/manifests/v0.22.3" in served
            assert set(IMAGES) <= set(containerd.references(namespace=NAMESPACE))
        finally:
            refs = containerd.references(namespace=NAMESPACE)
            if refs:
                containerd.ctr("images", "rm", "--sync", *refs, namespace=NAMESPACE)


def _serving(stack: contextlib.ExitStack, tmp_path: Path, archive, peer,
             images) -> tuple[Path, subprocess.Popen]:
    """`peer`'s registry (own storage fed with `images`, certificate from the cluster CA of
    tmp_path/ca) answering on its address's NODE_PORT: (its root, the process)."""
    root = tmp_path / peer.name
    (root / "etc/kubernetes").mkdir(parents=True)
    (root / "etc/kubernetes/pki").symlink_to(tmp_path / "ca/etc/kubernetes/pki")
    storage = root / registryserve.STORAGE.lstrip("/")
    feed(str(archive.path), str(storage), images)
    cert, key = issue_certificate(Host(str(root)), Runner(str(root)), peer.address,
                                  registryserve.REGISTRY_DIR,
                                  registryserve.cert_names(VIP, None),
                                  common_name=registryserve.UNIT, days=2)
    config = root / registryserve.CONFIG.lstrip("/")
    config.write_text(registryserve.config_yml(peer.address, str(storage), cert, key,
                                               port=NODE_PORT))
    log = root / "registry.log"
    proc = stack.enter_context(_started([require_tool("docker-registry"), "serve", str(config)],
                                        log))
    _wait("docker-registry on " + peer.address, partial(
        _answers, "https://{}:{}/v2/".format(peer.address, NODE_PORT),
        tmp_path / "ca/etc/kubernetes/pki/ca.crt"), proc, log)
    return root, proc


def _balancing(stack: contextlib.ExitStack, tmp_path: Path, peers, ca: Path) -> str:
    """The real haproxy on the loadbalancer step's haproxy.cfg (registry frontend on
    VIP:FRONTEND over `peers`' NODE_PORT), once it answers: the frontend's URL."""
    lb = lbsamples.load_balancer("static-pods", vip=VIP, port=API_PORT, peers=peers)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(lbconfig.haproxy_cfg(lb, static_pod=True, registry=True,
                                        registry_ports=(FRONTEND, NODE_PORT)))
    lb_log = tmp_path / "haproxy.log"
    haproxy = stack.enter_context(_started([require_tool("haproxy"), "-db", "-f", str(cfg)],
                                           lb_log))
    frontend = "https://{}:{}".format(VIP, FRONTEND)
    _wait("haproxy's registry frontend", lambda: _answers(frontend + "/v2/", ca), haproxy,
          lb_log)
    return frontend


def test_a_pull_the_chosen_registry_cannot_serve_falls_through_to_another_control_plane(
        archive, containerd, tmp_path):
    """Mid-upgrade: the load balancer sends a pull to cp1, whose storage lacks the new image
    (its upgrade has not fed it yet; here cp1 is haproxy's only backend), while cp2 has it.
    The runtime step's hosts.toml lists each control plane's registry after the VIP, and
    containerd 1.6 tries the next host after a 404: the pull succeeds from cp2."""
    _cluster_ca(tmp_path / "ca")
    with contextlib.ExitStack() as stack:
        _serving(stack, tmp_path, archive, PEERS[0], IMAGES[:1])
        _serving(stack, tmp_path, archive, PEERS[1], IMAGES[:2])
        ca = tmp_path / "ca/etc/kubernetes/pki/ca.crt"
        _balancing(stack, tmp_path, PEERS[:1], ca)
        hosts = tmp_path / "certs.d"
        for path, text in hosts_files(IMAGES[:2], VIP, [p.address for p in PEERS],
                                      ports=(FRONTEND, NODE_PORT)):
            target = hosts / Path(path).relative_to(CERTS_D)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text.replace(REGISTRY_CA, str(ca)))
        try:
            containerd.ctr("images", "pull", "--hosts-dir", str(hosts), IMAGES[1],
                           namespace=NAMESPACE)
            assert IMAGES[1] in containerd.references(namespace=NAMESPACE)
            assert "/v2/docker.io/flannel/flannel/manifests/v0.22.3" in \
                (tmp_path / "cp2/registry.log").read_text()
        finally:
            refs = containerd.references(namespace=NAMESPACE)
            if refs:
                containerd.ctr("images", "rm", "--sync", *refs, namespace=NAMESPACE)


SYSTEMCTL = Path(__file__).resolve().parents[4] / "scripts/mirrorworld/standins/systemctl.py"
UNIT_ADDRESS, UNIT_PORT = "127.0.0.4", 5457
DISTRIBUTION = "docker.io/library/registry:2.8.3"


def _systemctl(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemctl", *args], env=env, capture_output=True, text=True,
                          timeout=30)


def _unit_root(archive, tmp_path: Path, address: str, port: int
               ) -> tuple[Path, dict, Path, str]:
    """A control plane's root as the registry step leaves it (storage fed with IMAGES[:1],
    certificate, config.yml on `address`:`port`, the unit), and the lab's systemctl and ctr
    on PATH: (root, env, the unit's log, the registry's URL)."""
    root, bin_dir = tmp_path / "root", tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").symlink_to(SYSTEMCTL)
    (bin_dir / "ctr").symlink_to(hostworld.STANDINS)
    _cluster_ca(root)
    feed(str(archive.path), str(root / registryserve.STORAGE.lstrip("/")), IMAGES[:1])
    _issue(root, address)
    # host paths, as the step writes them: the stand-ins find them under the root
    config = root / registryserve.CONFIG.lstrip("/")
    config.write_text(registryserve.config_yml(address, port=port))
    unit = root / registryserve.UNIT_FILE.lstrip("/")
    unit.parent.mkdir(parents=True)
    placeholder = root / "usr/bin/ctr"  # what the mirror world's containerd.io installs
    placeholder.parent.mkdir(parents=True)
    placeholder.write_text("#!/bin/sh\n# kubecrate mirror world: /usr/bin/ctr\n")
    placeholder.chmod(0o755)
    unit.write_text(registryserve.unit_text(address, DISTRIBUTION))
    env = {"PATH": "{}:/usr/bin:/bin".format(bin_dir), "KUBECRATE_ROOT": str(root),
           "KUBECRATE_SYSTEMCTL_RUN": registryserve.UNIT, "PYTHONPATH": os.pathsep.join(sys.path)}
    log = root / "var/log/kubecrate-standin" / (registryserve.UNIT + ".log")
    return root, env, log, "https://{}:{}/v2/".format(address, port)


def _issue(root: Path, address: str) -> None:
    issue_certificate(Host(str(root)), Runner(str(root)), address, registryserve.REGISTRY_DIR,
                      (), common_name=registryserve.UNIT, days=2)


def _until_it_answers(env: dict, url: str, ca: Path, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not _answers(url, ca):
        assert time.monotonic() < deadline and _systemctl(
            env, "is-active", registryserve.UNIT).returncode == 0, log.read_text()
        time.sleep(0.1)


def test_the_registry_unit_runs_through_the_lab_systemctl_and_ctr(archive, containerd,
                                                                  tmp_path):
    """The unit the registry step writes, started by the lab's systemctl stand-in: its
    `ctr run` of distribution's image reaches the ctr stand-in, which runs the real
    docker-registry on config.yml through the unit's mounts; without the image in the node's
    containerd store, ctr refuses and the unit does not run. A worker root's `crictl pull`
    then goes through it (_lab_crictl_pulls_through_config_path)."""
    root, env, log, url = _unit_root(archive, tmp_path, UNIT_ADDRESS, UNIT_PORT)
    ca = root / "etc/kubernetes/pki/ca.crt"
    try:  # not in the node's containerd store: ctr refuses, nothing answers
        assert _systemctl(env, "start", registryserve.UNIT).returncode == 0
        deadline = time.monotonic() + TIMEOUT
        while _systemctl(env, "is-active", registryserve.UNIT).returncode == 0:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert 'ctr: image "{}": not found'.format(DISTRIBUTION) in log.read_text()
        hostruntime.seed_images(root, [DISTRIBUTION], runtime="containerd")
        assert _systemctl(env, "start", registryserve.UNIT).returncode == 0
        _until_it_answers(env, url, ca, log)
        manifest = requests.get(url + "registry.k8s.io/pause/manifests/3.6", verify=str(ca),
                                timeout=5, headers={"Accept": "application/vnd.oci.image."
                                                    "manifest.v1+json, application/vnd.docker."
                                                    "distribution.manifest.v2+json"})
        assert manifest.status_code == 200, manifest.text
        _lab_crictl_pulls_through_config_path(root, url[:-len("/v2/")], IMAGES[0],
                                              containerd, tmp_path / "worker")
    finally:
        _systemctl(env, "stop", registryserve.UNIT)


STALE_ADDRESS, STALE_PORT = "127.0.0.4", 18857


def _served(address: str, port: int) -> bytes | None:
    """The certificate the registry on `address`:`port` serves (DER), None if none answers."""
    try:
        return ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((address, port)))
    except OSError:
        return None


def test_a_restart_replaces_a_task_left_running_by_a_containerd_restart(archive, tmp_path):
    """containerd restarted (or the unit killed) under a running kubecrate-registry: ctr is
    gone, the shim keeps the task serving the old certificate. `renew-certs` issues a new one
    and restarts the unit: its ExecStartPre kills and deletes the stale task (`ctr tasks rm
    -f`), so `containers rm` and the new `ctr run` succeed and the fresh registry serves the
    new certificate. Without it, containers rm refuses, ctr run finds the container there,
    and the orphan goes on serving the old certificate while the unit fails."""
    root, env, log, url = _unit_root(archive, tmp_path, STALE_ADDRESS, STALE_PORT)
    ca, cert = root / "etc/kubernetes/pki/ca.crt", root / registryserve.CERT.lstrip("/")
    hostruntime.seed_images(root, [DISTRIBUTION], runtime="containerd")
    try:
        assert _systemctl(env, "start", registryserve.UNIT).returncode == 0
        _until_it_answers(env, url, ca, log)
        old = _served(STALE_ADDRESS, STALE_PORT)
        ctr = int((root / "run/kubecrate-standin/kubecrate-registry.pid").read_text())
        os.kill(ctr, signal.SIGKILL)  # ctr lost containerd: it exits, the task goes on
        deadline = time.monotonic() + TIMEOUT
        while _systemctl(env, "is-active", registryserve.UNIT).returncode == 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert _answers(url, ca) and _served(STALE_ADDRESS, STALE_PORT) == old
        _issue(root, STALE_ADDRESS)  # what renew-certs does before it restarts the unit
        new = ssl.PEM_cert_to_DER_cert(cert.read_text())
        assert new != old
        assert _systemctl(env, "restart", registryserve.UNIT).returncode == 0
        deadline = time.monotonic() + TIMEOUT
        while not (_answers(url, ca) and _served(STALE_ADDRESS, STALE_PORT) == new):
            assert time.monotonic() < deadline and _systemctl(
                env, "is-active", registryserve.UNIT).returncode == 0, log.read_text()
            time.sleep(0.1)
        assert "already exists" not in log.read_text()
    finally:
        _systemctl(env, "stop", registryserve.UNIT)
        subprocess.run(["ctr", "-n", "k8s.io", "tasks", "rm", "-f", registryserve.UNIT],
                       env=env, capture_output=True, timeout=30)  # an orphan the test left


def _lab_crictl_pulls_through_config_path(cp_root: Path, mirror: str, ref: str, containerd,
                                          root: Path) -> None:
    """The lab's `crictl pull` on a worker root (scripts/lab/hostpull.py): without
    config_path in its config.toml it fails as offline; with it, the real containerd pulls
    through the root's hosts.toml (its `ca` a host path, read under the root) and the root's
    store records the manifest digest the registry's storage holds."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "crictl").symlink_to(hostworld.STANDINS)
    (root / "etc/kubernetes/pki").mkdir(parents=True)
    shutil.copyfile(cp_root / "etc/kubernetes/pki/ca.crt", root / "etc/kubernetes/pki/ca.crt")
    env = {"PATH": "{}:/usr/bin:/bin".format(bin_dir), "KUBECRATE_ROOT": str(root),
           "KUBECRATE_TEST_PULL_CONTAINERD": str(containerd.socket),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    config = root / "etc/containerd/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("version = 2\n")

    def pull() -> subprocess.CompletedProcess:
        return subprocess.run(["crictl", "-r", "unix:///run/containerd/containerd.sock", "pull",
                               ref], env=env, capture_output=True, text=True, timeout=180)
    offline = pull()
    assert offline.returncode == 1 and "no such host" in offline.stderr, offline.stderr
    config.write_text('version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n'
                      '  config_path = "{}"\n'.format(CERTS_D))
    registry = split_reference(ref)[0]
    hosts = root / CERTS_D.lstrip("/") / registry / "hosts.toml"
    hosts.parent.mkdir(parents=True)
    hosts.write_text(hosts_toml(registry, mirror, REGISTRY_CA))
    try:
        done = pull()
        assert done.returncode == 0, done.stderr
        digest = tag_link(str(cp_root / registryserve.STORAGE.lstrip("/")), ref)
        assert digest and digest in done.stdout, done.stdout
        store = json.loads((root / hostruntime.CTR_STORE.lstrip("/")).read_text())
        assert store == {ref: digest}
    finally:
        namespace = hostpull.namespace(root)
        refs = containerd.references(namespace=namespace)
        if refs:
            containerd.ctr("images", "rm", "--sync", *refs, namespace=namespace)
