"""Config injection (docs/security.md): every cluster.yaml / join.yaml value that reaches a
rendered file is validated as a whole string, and the renderer escapes or refuses what could
break out of its line."""

import pytest
import tomllib
from lab import lbsamples

from installer import joinfile
from installer.format.cluster import ClusterConfigError, parse_cluster
from installer.format.errors import ExitCode, KubecrateError
from installer.render import render

CLUSTER = """\
control_plane: {{vip: 10.0.0.100, port: 8443}}
networking: {{pod_cidr: 10.244.0.0/16, service_cidr: 10.96.0.0/12}}
load_balancer:
  mode: services
  interface: {interface}
  router_id: 51
  auth_pass: {auth_pass}
runtime:
  registry_mirrors: {mirrors}
  insecure_registries: {insecure}
nodes:
  - {{name: {name}, address: 10.0.0.11, role: control-plane}}
  - {{name: w1, address: 10.0.0.21, role: worker}}
"""
GOOD = {"interface": "eth0", "auth_pass": "k8sVIP42", "mirrors": '["https://m.example:5000"]',
        "insecure": '["m.example:5000", "10.1.0.0/16"]', "name": "cp1"}
# The value of the adversarial run: it closed the endpoint list and opened a new runtime whose
# BinaryName was the attacker's program.
TOML_INJECTION = ('https://m.example\\"]\\n      [plugins.\\"io.containerd.grpc.v1.cri\\".'
                  'containerd.runtimes.evil.options]\\n        BinaryName = \\"/tmp/evil')


def cluster(**values):
    text = CLUSTER.format(**dict(GOOD, **values))
    return parse_cluster(text, "cluster.yaml")


def test_the_sample_is_valid():
    assert cluster().runtime.insecure_registries == ("m.example:5000", "10.1.0.0/16")


def test_the_toml_injection_in_registry_mirrors_is_refused():
    with pytest.raises(ClusterConfigError) as err:
        cluster(mirrors='["{}"]'.format(TOML_INJECTION))
    assert err.value.exit_code == ExitCode.USAGE
    assert err.value.message.startswith("cluster.yaml:9: runtime.registry_mirrors[0]: ")
    assert "is not a mirror URL like https://mirror.example:5000" in err.value.message


def test_an_injection_in_insecure_registries_is_refused():
    with pytest.raises(ClusterConfigError) as err:
        cluster(insecure='["m.example\\"]\\n[evil]"]')
    assert "runtime.insecure_registries[0]: " in err.value.message
    assert "is not a registry host[:port] or a CIDR" in err.value.message


def test_credentials_in_a_registry_mirror_are_refused_and_not_echoed():
    with pytest.raises(ClusterConfigError) as err:
        cluster(mirrors='["https://bob:hunter22@m.example/"]')
    assert "https://***@m.example/" in err.value.message and "hunter22" not in err.value.message
    assert "docker login" in err.value.hint


@pytest.mark.parametrize("key, value, where", [
    ("name", '"cp1\\n"', "nodes[0].name"),
    ("interface", '"eth0\\n"', "load_balancer.interface"),
    ("auth_pass", '"k8sVIP4\\n"', "load_balancer.auth_pass"),
])
def test_a_value_with_a_trailing_newline_is_refused(key, value, where):
    with pytest.raises(ClusterConfigError) as err:
        cluster(**{key: value})
    assert where in err.value.message


def test_a_join_token_with_a_trailing_newline_is_refused():
    text = joinfile.dump(lbsamples.join_info()).replace(
        lbsamples.TOKEN, lbsamples.TOKEN + "\\n")
    with pytest.raises(joinfile.JoinFileError) as err:
        joinfile.parse(text, "join.yaml")
    assert err.value.message.startswith("join.yaml: token: not a bootstrap token")


def test_containerd_toml_keeps_every_value_a_string():
    # validation is the first line; the renderer's quoting is the second
    hostile = 'https://m.example"] [evil] x = ["'
    text = render("containerd-config.toml.j2", pause_image="registry.k8s.io/pause:3.9",
                  mirrors=[("docker.io", [hostile])], insecure=['r.example"] [evil'])
    cri = tomllib.loads(text)["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["registry"]["mirrors"]["docker.io"]["endpoint"] == [hostile]
    assert list(cri["registry"]["configs"]) == ['r.example"] [evil']
    assert list(cri["containerd"]["runtimes"]) == ["runc"]


def test_no_rendered_value_may_hold_a_newline():
    with pytest.raises(KubecrateError) as err:
        render("chrony.conf.j2", cluster_name="c", servers=["ntp.example iburst\nserver evil"])
    assert err.value.exit_code == ExitCode.USAGE and "control character" in err.value.message
