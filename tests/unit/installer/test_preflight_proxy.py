"""Preflight warns when an HTTP proxy would swallow cluster traffic."""

import os
from types import SimpleNamespace

import pytest

from installer.format.cluster import parse_cluster
from installer.host import Host, Probes
from installer.steps import preflight
from installer.steps.preflight_proxy import environment_of, uncovered
from tests.unit.installer.test_host_steps import GOOD

CLUSTER = GOOD  # cp1 and w1 on 10.0.0.0/24, VIP 10.0.0.100, cluster-endpoint
COVERING = "localhost,127.0.0.1,10.0.0.0/24,cluster-endpoint,10.244.0.0/16,10.96.0.0/12"


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                "no_proxy"):
        monkeypatch.delenv(key, raising=False)
    cluster = parse_cluster(CLUSTER)
    return SimpleNamespace(host=Host(str(tmp_path), probes=Probes(str(tmp_path))),
                           cluster=cluster, node=cluster.nodes[0],
                           info=SimpleNamespace(runtime="docker"))


def test_no_proxy_anywhere_passes(ctx):
    [finding] = preflight.check_proxy(ctx)
    assert (finding.level, finding.message) == ("pass", "no HTTP(S) proxy is set")
    assert preflight.check_proxy in preflight.CHECKS


def test_a_proxy_in_the_environment_without_no_proxy_warns_naming_what_is_missing(
        ctx, monkeypatch):
    monkeypatch.setenv("https_proxy", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,10.0.0.11")
    [finding] = preflight.check_proxy(ctx)
    assert finding.level == "warn" and finding.check == "proxy"
    assert finding.message.startswith("the installer's environment sets an HTTP(S) proxy but "
                                      "its NO_PROXY does not cover 10.0.0.100, cluster-endpoint, "
                                      "10.0.0.21, 10.244.0.0/16, 10.96.0.0/12")
    assert finding.fix.startswith("add 10.0.0.100,cluster-endpoint,10.0.0.21,")


def test_a_runtime_drop_in_with_a_proxy_is_read_too(ctx):
    folder = ctx.host.path("/etc/systemd/system/docker.service.d")
    os.makedirs(folder)
    with open(os.path.join(folder, "http-proxy.conf"), "w") as handle:
        handle.write('[Service]\nEnvironment="HTTP_PROXY=http://proxy.corp:3128" '
                     '"NO_PROXY=10.0.0.0/24"\n')
    [finding] = preflight.check_proxy(ctx)
    assert finding.level == "warn"
    assert finding.message.startswith("/etc/systemd/system/docker.service.d/http-proxy.conf "
                                      "sets an HTTP(S) proxy but its NO_PROXY does not cover "
                                      "cluster-endpoint, 10.244.0.0/16, 10.96.0.0/12")
    with open(os.path.join(folder, "http-proxy.conf"), "a") as handle:
        handle.write("Environment=NO_PROXY=" + COVERING + "\n")
    assert [f.level for f in preflight.check_proxy(ctx)] == ["pass"]


def test_no_proxy_matching_follows_go():
    assert uncovered("*", ["10.0.0.1"]) == []
    assert uncovered(".corp.example", ["api.corp.example", "corp.example", "other"]) == ["other"]
    assert uncovered("10.0.0.0/8", ["10.244.0.0/16", "11.0.0.0/8", "10.1.2.3"]) == \
        ["11.0.0.0/8"]
    assert environment_of('Environment="A=1 2" B=3\nEnvironment=A=4\n') == {"A": "4", "B": "3"}
