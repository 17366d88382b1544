"""keepalived / haproxy / static-pod rendering: golden files plus the properties a user of the
VIP would notice (who holds it first, how fast a dead apiserver is noticed)."""

import re

import pytest
import yaml
from lab import lbsamples

from installer import lbconfig
from tests.golden_files import check_golden


@pytest.mark.parametrize("name", ["cp1", "cp2", "cp3"])
def test_keepalived_conf_matches_golden(name):
    lb = lbsamples.load_balancer()
    check_golden("lb/services/keepalived-{}.conf".format(name),
                           lbconfig.keepalived_conf(lb, name))


def test_check_script_and_haproxy_match_golden():
    lb = lbsamples.load_balancer()
    check_golden("lb/services/check_apiserver-cp1.sh", lbconfig.check_script(lb, "cp1"))
    check_golden("lb/services/haproxy.cfg", lbconfig.haproxy_cfg(lb))


def test_static_pod_files_match_golden():
    lb = lbsamples.load_balancer("static-pods")
    files = {f.path: f for f in lbconfig.static_pod_files(lb) + lbconfig.config_files(
        lb, "cp1", lbconfig.vrrp_for(lb, "7"))}
    for path in ("/etc/kubernetes/manifests/keepalived.yaml",
                 "/etc/kubernetes/manifests/haproxy.yaml", "/etc/haproxy/haproxy.cfg",
                 "/etc/keepalived/keepalived.conf"):
        check_golden("lb/static-pods/" + path.rsplit("/", 1)[1], files[path].content)


def test_first_node_is_master_with_the_highest_priority():
    lb = lbsamples.load_balancer()
    states = {}
    for peer in lb.peers:
        text = lbconfig.keepalived_conf(lb, peer.name)
        states[peer.name] = (re.search(r"state (\w+)", text).group(1),
                             int(re.search(r"priority (\d+)", text).group(1)))
    assert states["cp1"][0] == "MASTER"
    assert {states["cp2"][0], states["cp3"][0]} == {"BACKUP"}
    assert states["cp1"][1] > states["cp2"][1] > states["cp3"][1]
    # A failing check must drop any node below every healthy one, or the VIP would stay on a
    # node whose apiserver is dead.
    weight = int(re.search(r"weight -(\d+)", lbconfig.keepalived_conf(lb, "cp1")).group(1))
    assert states["cp1"][1] - weight < states["cp3"][1]


def test_unicast_peers_are_the_other_nodes():
    lb = lbsamples.load_balancer()
    text = lbconfig.keepalived_conf(lb, "cp2")
    block = re.search(r"unicast_peer \{(.*?)\}", text, re.S).group(1).split()
    assert block == ["10.213.0.11", "10.213.0.13"]
    assert "unicast_src_ip 10.213.0.12" in text


def test_dead_apiserver_leaves_but_a_busy_one_stays():
    """A busy apiserver's /healthz waits up to 2 s for its etcd check: every probe allows more
    than that, in the check script and in haproxy. A dead one refuses connections and drops its
    node below every healthy one within interval * fall; haproxy drops it on the first failed
    connection from a client."""
    lb = lbsamples.load_balancer()
    text = lbconfig.keepalived_conf(lb, "cp1")
    interval = int(re.search(r"interval (\d+)", text).group(1))
    fall = int(re.search(r"fall (\d+)", text).group(1))
    timeout = int(re.search(r"timeout (\d+)", text).group(1))
    assert interval * fall <= 4
    script = lbconfig.check_script(lb, "cp1")
    probes = [int(t) for t in re.findall(r"--max-time (\d+)", script)]
    assert len(probes) == 2 and all(2 < t < timeout for t in probes)
    assert script.count(" &\n") == 2  # both probes at once: the script ends within one timeout
    cfg = lbconfig.haproxy_cfg(lb)
    assert int(re.search(r"timeout check (\d+)s", cfg).group(1)) > 2
    assert re.search(r"default-server inter 1s fastinter 250ms fall 2 rise 2 observe layer4 "
                     r"error-limit 1 on-error mark-down", cfg)
    assert "option redispatch" in cfg and re.search(r"retries [1-9]", cfg)
    assert "balance roundrobin" in cfg and "balance source" not in cfg
    assert cfg.count("check check-ssl verify none") == 3
    assert "option httpchk GET /healthz" in cfg


@pytest.mark.parametrize("mode,release,image,version", [
    ("services", "7", None, 2), ("services", "7.9", None, 2), ("services", "8", None, 3),
    ("services", "9", None, 3), ("static-pods", "7", None, 3),
    ("static-pods", "7", "docker.io/osixia/keepalived:1.3.5", 2),
    ("static-pods", "8", "registry.local/keepalived:latest", 2),
    ("static-pods", "7", "registry.local/keepalived:v2.2.7", 3)])
def test_vrrp_follows_the_keepalived_that_runs(mode, release, image, version):
    """CentOS 7's keepalived 1.3.5 keeps VRRPv2 (its VRRPv3 breaks with two unicast peers);
    EL8/EL9 and the default 2.0.20 image get VRRPv3; an image tag that names no version is
    treated like 1.3.5."""
    lb = lbsamples.load_balancer(mode, **({"keepalived_image": image} if image else {}))
    vrrp = lbconfig.vrrp_for(lb, release)
    assert vrrp.version == version
    text = lbconfig.keepalived_conf(lb, "cp2", vrrp=vrrp)
    if version == 3:
        # RFC 5798 has no authentication; keepalived -t refuses the block with VRRPv3
        assert "vrrp_version 3" in text and "authentication" not in text
        assert "advert_int 0.2\n" in text
    else:
        assert "vrrp_version" not in text and "auth_pass kc3cret1" in text
        assert "advert_int 1\n" in text  # 1.3.5 refuses a fraction with VRRPv2


def test_vrrpv3_fails_over_within_a_second_after_a_silent_loss():
    lb = lbsamples.load_balancer()
    for peer in lb.peers[1:]:
        assert lbconfig.VRRP_V3.master_down_seconds(lb.priority(peer.name)) < 0.7
        assert lbconfig.VRRP_V2.master_down_seconds(lb.priority(peer.name)) > 3


def test_haproxy_services_mode_uses_only_the_haproxy_1_5_subset():
    cfg = lbconfig.haproxy_cfg(lbsamples.load_balancer())
    for newer in ("log stdout", "http-check connect", "http-check send", "mode http"):
        assert newer not in cfg
    assert "log stdout" in lbconfig.haproxy_cfg(lbsamples.load_balancer("static-pods"),
                                                static_pod=True)


def test_config_files_paths_and_modes():
    lb = lbsamples.load_balancer()
    files = {f.path: f.mode for f in lbconfig.config_files(lb, "cp3")}
    assert files == {"/etc/keepalived/keepalived.conf": 0o644,
                     "/etc/keepalived/check_apiserver.sh": 0o755,
                     "/etc/haproxy/haproxy.cfg": 0o644}
    assert lbconfig.static_pod_files(lb) == []


def test_external_mode_renders_nothing():
    lb = lbsamples.load_balancer("external", port=6443)
    assert lbconfig.config_files(lb, "cp1") == []
    with pytest.raises(ValueError):
        lbconfig.haproxy_cfg(lb)


def test_static_pod_manifests_stay_offline():
    lb = lbsamples.load_balancer("static-pods")
    for rendered in lbconfig.static_pod_files(lb):
        pod = yaml.safe_load(rendered.content)
        assert pod["spec"]["hostNetwork"] is True
        (container,) = pod["spec"]["containers"]
        assert container["imagePullPolicy"] == "IfNotPresent"
        assert container["image"] in (lb.keepalived_image, lb.haproxy_image)
        assert rendered.mode == 0o600


@pytest.mark.parametrize("mode", ["services", "static-pods"])
def test_registry_mode_adds_a_frontend_over_every_control_planes_registry(mode):
    lb = lbsamples.load_balancer(mode)
    files = {f.path: f.content for f in lbconfig.config_files(lb, "cp1", registry=True)}
    cfg = files[lbconfig.HAPROXY_CFG]
    registry = cfg[cfg.index("frontend kubecrate-registry"):]
    assert "bind *:8008\n" in registry
    servers = re.findall(r"^    server (\S+) (\S+) check check-ssl verify none$", registry, re.M)
    assert servers == [(peer.name, peer.address + ":8009") for peer in lb.peers]
    assert "option httpchk GET /v2/" in registry
    assert "kubecrate-registry" not in lbconfig.haproxy_cfg(lb, static_pod=mode == "static-pods")
