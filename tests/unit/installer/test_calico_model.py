"""The stand-ins' calico model (scripts/mirrorworld/standins/_calico.py): calico-node runs on a
node only when the kubelet mounts its volumes, its pool is valid and it autodetects an
address there; the installer's manifest (kubernetes-internal-ip) picks each node's cluster
address on multi-NIC hosts where calico's default (first-found) picks the wrong network."""

import copy
import json
import sys
from pathlib import Path

from installer.steps import calico
from tests.unit.installer.test_calico_install import CALICO

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts/mirrorworld/standins"))
import _calico  # noqa: E402
import _nodenet  # noqa: E402

PATHS = {path: "directory" for path in _nodenet.HOST_PATHS}


def node(name, address, first=(), created="2026-01-01T00:00:0%d", paths=None):
    """A node whose interfaces are `first` (a storage or management NIC, listed before the
    cluster's eth0 in the kernel's order), then eth0 with `address`/24."""
    facts = {"interfaces": [{"name": "lo", "addresses": ["127.0.0.1/8"], "mtu": 65536}]
             + list(first) + [{"name": "eth0", "addresses": [address + "/24"], "mtu": 1500}],
             "default_iface": "", "nameservers": [], "host_paths": paths or PATHS}
    return {"metadata": {"name": name, "creationTimestamp": created % int(address[-1]),
                         "annotations": {_nodenet.ANNOTATION: json.dumps(facts)}},
            "status": {"addresses": [{"type": "InternalIP", "address": address}]}}


def storage(octet):
    return {"name": "ens3", "addresses": ["172.16.9.%d/24" % octet], "mtu": 9000}


NODES = [node("cp1", "10.0.0.11", [storage(11)]), node("w1", "10.0.0.21", [storage(21)])]


def parsed(text):
    """The installer's output: JSON documents after `---` lines."""
    return [json.loads(part) for part in text.split("---\n") if part.strip()]


OURS = parsed(calico.customize(CALICO, "10.244.0.0/16", "9"))


def applied(pod_cidr="10.244.0.0/16", **env):
    docs = copy.deepcopy(OURS) if pod_cidr == "10.244.0.0/16" else \
        parsed(calico.customize(CALICO, pod_cidr, "9"))
    ds = [d for d in docs if d and d["kind"] == "DaemonSet"][0]
    container = ds["spec"]["template"]["spec"]["containers"][0]
    for name, value in env.items():
        container["env"] = [e for e in container["env"] if e["name"] != name]
        if value is not None:
            container["env"].append({"name": name, "value": value})
    return [d for d in docs if d]


def results(objects, nodes=NODES, subnet="10.244.0.0/16"):
    return {n["metadata"]["name"]: _calico.calico_on(nodes, n, objects, subnet) for n in nodes}


def test_the_installers_manifest_runs_calico_on_every_node_on_its_cluster_address():
    states = results(applied())
    assert states["cp1"]["address"] == "10.0.0.11/24" and states["cp1"]["iface"] == "eth0"
    assert states["w1"]["address"] == "10.0.0.21/24"
    assert {s["pool"] for s in states.values()} == {"10.244.0.0/16"}
    assert states["cp1"]["tunnel"] == "10.244.0.0" and states["w1"]["tunnel"] == "10.244.0.64"
    assert states["cp1"]["backend"] == "NFT"
    assert _calico.ping(states, "cp1", ["-c", "1", "-W", "2", "10.244.0.64"])[0] == 0
    assert _calico.ping(states, "w1", ["-c", "1", "10.244.0.0"])[0] == 0
    assert _calico.ping(states, "w1", ["-c", "1", "10.244.3.3"])[0] == 1


def test_first_found_on_multi_nic_hosts_takes_the_storage_network():
    """calico's default picks the first interface: the nodes run, but VXLAN goes to
    addresses of a network that is not the cluster's (here each on its own storage
    subnet), and no node reaches the other's tunnel."""
    nodes = [node("cp1", "10.0.0.11", [{"name": "ens3", "addresses": ["172.16.1.11/24"],
                                       "mtu": 9000}]),
             node("w1", "10.0.0.21", [{"name": "ens3", "addresses": ["172.16.2.21/24"],
                                      "mtu": 9000}])]
    states = results(applied(IP_AUTODETECTION_METHOD=None), nodes)
    assert states["cp1"]["running"] and states["cp1"]["address"] == "172.16.1.11/24"
    assert _calico.ping(states, "cp1", ["-c", "1", states["w1"]["tunnel"]])[0] == 1
    # the installer's kubernetes-internal-ip: both on 10.0.0.0/24, reachable
    states = results(applied(), nodes)
    assert _calico.ping(states, "cp1", ["-c", "1", states["w1"]["tunnel"]])[0] == 0


def test_can_reach_the_vip_picks_the_route_and_fails_without_one():
    states = results(applied(IP_AUTODETECTION_METHOD="can-reach=10.0.0.100"))
    assert states["w1"]["address"] == "10.0.0.21/24"
    states = results(applied(IP_AUTODETECTION_METHOD="can-reach=10.9.9.9"))  # no route
    assert not states["w1"]["running"]
    assert "Unable to auto-detect IPv4 address by connecting to 10.9.9.9" in \
        states["w1"]["message"]


def test_what_calico_node_refuses():
    for env, said in (
            ({"CALICO_IPV4POOL_CIDR": "10.244.0.0/33"},
             "Invalid CIDR specified in CALICO_IPV4POOL_CIDR '10.244.0.0/33'"),
            ({"CALICO_IPV4POOL_CIDR": "fd00::/64"}, "Invalid CIDR specified"),
            ({"CALICO_IPV4POOL_BLOCK_SIZE": "16"}, "Invalid blocksize 16 for version 4"),
            ({"CALICO_IPV4POOL_VXLAN": "Sometimes"}, "Unrecognized VXLAN mode"),
            ({"NO_DEFAULT_POOLS": "true"}, "Invalid configuration with NO_DEFAULT_POOLS"),
            ({"IP_AUTODETECTION_METHOD": "first-up"}, "Invalid IP autodetection method"),
            ({"IP_AUTODETECTION_METHOD": "interface=bond.*"},
             "Couldn't autodetect an IPv4 address")):
        state = results(applied(**env))["cp1"]
        assert not state["running"] and said in state["message"], (env, state)
        assert state["message"].startswith("calico-node: CrashLoopBackOff: ")


def test_the_pool_is_the_env_else_kubeadms_pod_subnet_and_outside_it_is_not_refused():
    assert results(applied(CALICO_IPV4POOL_CIDR=None), subnet="10.32.0.0/16")["cp1"][
        "pool"] == "10.32.0.0/16"  # extractKubeadmCIDRs
    assert results(applied(CALICO_IPV4POOL_CIDR=None), subnet="")["cp1"][
        "pool"] == "192.168.0.0/16"
    # calico creates a pool outside the cluster's podSubnet: the model records, not refuses
    state = results(applied(pod_cidr="10.99.0.0/16"))["cp1"]
    assert state["running"] and state["pool"] == "10.99.0.0/16"


def test_the_kubelet_refuses_a_missing_bpffs_but_not_a_missing_cni_config_dir():
    missing = dict(PATHS, **{"/sys/fs/bpf": "missing"})
    nodes = [node("cp1", "10.0.0.11", paths=missing)]
    state = results(applied(), nodes)["cp1"]
    assert not state["running"]
    assert 'MountVolume.SetUp failed for volume "bpffs" : hostPath type check failed: ' \
           '/sys/fs/bpf is not a directory' in state["message"]
    nodes = [node("cp1", "10.0.0.11", paths=dict(PATHS, **{"/etc/cni/net.d": "missing"}))]
    assert results(applied(), nodes)["cp1"]["running"]  # no type: the runtime creates it


def test_without_calico_node_the_network_plugin_is_not_ready():
    state = results([d for d in applied() if d["kind"] != "DaemonSet"])["cp1"]
    assert not state["running"] and "cni plugin not initialized" in state["message"]
