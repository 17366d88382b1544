"""`kubectl exec` in the kubectl stand-in (scripts/mirrorworld/standins/kubectl.py and
_podexec.py): the refusals of the real kubectl, kubelet and runtime, and busybox nslookup and
ping in a kube-flannel pod answered from the per-node model.

The stand-in runs in-process against `Apiserver`, a dict-backed stand-in of the apiserver
stand-in's storage; `StandinRunner` gives installer code the kubectl stand-in as its runner."""

import copy
import io
import json
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml

from installer.runner import Result
from installer.steps import cni
from tests.unit.installer.test_ha_steps import FLANNEL

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts/mirrorworld/standins"))
import _nodenet  # noqa: E402
import kubectl as kubectl_standin  # noqa: E402
from _common import StandinError  # noqa: E402

CLUSTER = {"networking": {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12",
                          "dnsDomain": "cluster.local"}}
OURS = list(yaml.safe_load_all(cni.customize(FLANNEL, "10.244.0.0/16")))  # per-node safe


def node(name, address, order, iface="eth0", nameservers=("10.0.0.1",), default=True):
    facts = {"interfaces": [{"name": "lo", "addresses": ["127.0.0.1/8"], "mtu": 65536},
                            {"name": iface, "addresses": [address + "/24"], "mtu": 1500}],
             "default_iface": iface if default else "", "nameservers": list(nameservers)}
    return {"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:0%dZ" % order,
                         "annotations": {_nodenet.ANNOTATION: json.dumps(facts)}},
            "status": {"addresses": [{"type": "InternalIP", "address": address}],
                       "nodeInfo": {"kubeletVersion": "v1.23.17"}}}


def nodes(**changes):
    """cp1, cp2, w1 (registered in that order); `changes`: per name, node() keywords."""
    return [node(name, address, i, **changes.get(name, {})) for i, (name, address) in
            enumerate((("cp1", "10.0.0.11"), ("cp2", "10.0.0.12"), ("w1", "10.0.0.21")))]


def objects(args=None):
    """What the first node applied: the installer's flannel, or one with other args."""
    docs = copy.deepcopy(OURS)
    if args is not None:
        container = docs[1]["spec"]["template"]["spec"]["containers"][0]
        container["args"], container["env"] = args, []
    return docs


class Apiserver:
    """The storage the kubectl stand-in reads (apiserver.py's routes it uses)."""

    def __init__(self, node_list, applied, cluster=CLUSTER):
        self.node_list, self.applied, self.cluster = node_list, applied, cluster

    def call(self, method, path, body=None):
        if path == "/api/v1/nodes":
            return {"items": copy.deepcopy(self.node_list)}
        if path == "/kubecrate/v1/objects":
            return {"items": copy.deepcopy(self.applied)}
        if path.endswith("/configmaps/kubeadm-config") and self.cluster:
            return {"data": {"ClusterConfiguration": json.dumps(self.cluster)}}
        name = path.rsplit("/", 1)[-1]
        raise StandinError('Error from server (NotFound): configmaps "%s" not found' % name)


class StandinRunner:
    """An installer runner whose `kubectl` is the stand-in, against `api`."""

    def __init__(self, api, monkeypatch):
        monkeypatch.setattr(kubectl_standin, "Client", lambda opts: api)
        self.calls = []

    def query(self, argv, timeout=0):
        assert argv[0] == "kubectl", argv
        self.calls.append(list(argv))
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = kubectl_standin.main(list(argv[1:])) or 0
        return Result(list(argv), code, out.getvalue(), err.getvalue())


def kubectl(monkeypatch, api, *args):
    return StandinRunner(api, monkeypatch).query(["kubectl", "--kubeconfig", "admin.conf"]
                                                 + list(args))


def flannel_exec(monkeypatch, api, on, *command, container="kube-flannel"):
    return kubectl(monkeypatch, api, "exec", "-n", "kube-flannel", "kube-flannel-ds-" + on,
                   "-c", container, "--", *command)


def test_ping_reaches_another_nodes_flannel1_only_when_both_flanneld_run(monkeypatch):
    api = Apiserver(nodes(w1={"iface": "ens192"}), objects(["--kube-subnet-mgr",
                                                            "--iface=eth0"]))
    cidrs = {n["metadata"]["name"]: n["spec"]["podCIDR"] for n in json.loads(kubectl(
        monkeypatch, api, "get", "nodes", "-o", "json").stdout)["items"]}
    assert cidrs == {"cp1": "10.244.0.0/24", "cp2": "10.244.1.0/24", "w1": "10.244.2.0/24"}
    done = flannel_exec(monkeypatch, api, "cp1", "ping", "-c", "1", "-W", "2", "10.244.1.0")
    assert done.returncode == 0 and "1 packets received, 0% packet loss" in done.stdout
    # w1's flanneld finds no eth0: no lease, so cp1 has no route to 10.244.2.0/24
    lost = flannel_exec(monkeypatch, api, "cp1", "ping", "-c", "1", "-W", "2", "10.244.2.0")
    assert lost.returncode == 1, lost
    assert "1 packets transmitted, 0 packets received, 100% packet loss" in lost.stdout
    assert lost.stderr == "command terminated with exit code 1\n"
    # the kubelet finds no running kube-flannel container on w1
    refused = flannel_exec(monkeypatch, api, "w1", "ping", "-c", "1", "10.244.0.0")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == 'error: unable to upgrade connection: container not found ' \
                             '("kube-flannel")\n'


def test_without_a_default_route_the_lost_ping_is_network_unreachable(monkeypatch):
    api = Apiserver(nodes(cp1={"default": False}, w1={"iface": "ens192"}),
                    objects(["--kube-subnet-mgr", "--iface=eth0", "--iface=10.0.0.11"]))
    done = flannel_exec(monkeypatch, api, "cp1", "ping", "-c", "1", "10.244.2.0")
    assert done.returncode == 1 and "ping: sendto: Network unreachable" in done.stdout


def test_nslookup_answers_kubernetes_default_while_coredns_is_ready(monkeypatch):
    api = Apiserver(nodes(), objects())
    name = "kubernetes.default.svc.cluster.local"
    done = flannel_exec(monkeypatch, api, "w1", "nslookup", "-type=a", name, "10.96.0.10")
    assert done.returncode == 0, done
    assert "Name:\t{}\nAddress: 10.96.0.1\n".format(name) in done.stdout
    nx = flannel_exec(monkeypatch, api, "w1", "nslookup", "nope.default.svc.cluster.local",
                      "10.96.0.10")
    assert nx.returncode == 1 and "NXDOMAIN" in nx.stdout
    # no nameserver anywhere, kubeadm's Corefile: CoreDNS crash-loops, no Ready endpoint
    dead = Apiserver(nodes(**{n: {"nameservers": ()} for n in ("cp1", "cp2", "w1")}),
                     objects())
    out = flannel_exec(monkeypatch, dead, "w1", "nslookup", "-type=a", name, "10.96.0.10")
    assert out.returncode == 1
    assert ";; connection timed out; no servers could be reached" in out.stdout
    services = json.loads(kubectl(monkeypatch, api, "get", "services", "-A", "-l",
                                  "k8s-app=kube-dns", "-o", "json").stdout)["items"]
    assert [s["spec"]["clusterIP"] for s in services] == ["10.96.0.10"]


def test_exec_refuses_what_kubectl_the_kubelet_and_the_runtime_refuse(monkeypatch):
    api = Apiserver(nodes(), objects())
    missing = kubectl(monkeypatch, api, "exec", "-n", "kube-flannel", "kube-flannel-ds-w9",
                      "--", "ping", "10.244.0.0")
    assert (missing.returncode, missing.stderr) == (
        1, 'Error from server (NotFound): pods "kube-flannel-ds-w9" not found\n')
    elsewhere = kubectl(monkeypatch, api, "exec", "kube-flannel-ds-w1", "--", "ping", "x")
    assert "NotFound" in elsewhere.stderr  # the default namespace is "default"
    nothing = kubectl(monkeypatch, api, "exec", "-n", "kube-flannel", "kube-flannel-ds-w1")
    assert "you must specify at least one command" in nothing.stderr
    wrong = flannel_exec(monkeypatch, api, "w1", "ping", "x", container="flannel")
    assert 'container not found ("flannel")' in wrong.stderr
    # CoreDNS's image is FROM scratch: no nslookup; dockershim streams runc's error, exit 126
    coredns = kubectl(monkeypatch, api, "exec", "-n", "kube-system", "coredns-w1", "--",
                      "nslookup", "kubernetes.default")
    assert coredns.returncode == 126, coredns
    assert 'exec: "nslookup": executable file not found in $PATH: unknown' in coredns.stdout
    assert coredns.stderr == "command terminated with exit code 126\n"
    absent = flannel_exec(monkeypatch, api, "w1", "curl", "http://10.244.0.0")
    assert absent.returncode == 126 and '"curl": executable file not found' in absent.stdout


@pytest.mark.parametrize("image, command, found", [
    ("docker.io/flannel/flannel:v0.22.3", "nslookup", True),
    ("docker.io/flannel/flannel:v0.22.3", "/bin/ping", True),
    ("docker.io/flannel/flannel:v0.22.3", "bash", False),
    ("registry.k8s.io/coredns/coredns:v1.8.6", "sh", False),
    ("registry.example:5000/google_containers/coredns:v1.8.6", "/coredns", True),
    ("docker.io/flannel/flannel-cni-plugin:v1.2.0", "/opt/bin/flanneld", False),
])
def test_what_each_image_holds(image, command, found):
    import _podexec

    assert _podexec.image_has(image, command) is found
