"""Unit tests of the host side with small fakes: cluster.yaml validation, the host model, the
runner, the lock, preflight checks and step decisions."""

import os
import sys
from types import SimpleNamespace

import pytest

from installer.format.bundleinfo import BundleImage
from installer.format.cluster import ClusterConfigError, find_node, parse_cluster
from installer.format.errors import ExitCode, PreconditionError
from installer.host import Host, Probes
from installer.runner import CommandFailed, Result, Runner
from installer.state import HostLock, LockedError
from installer.steps import hostprep, images, preflight

GOOD = """\
control_plane: {vip: 10.0.0.100, dns_name: cluster-endpoint, port: 8443}
networking: {pod_cidr: 10.244.0.0/16, service_cidr: 10.96.0.0/12}
nodes:
  - {name: cp1, address: 10.0.0.11, role: control-plane}
  - {name: w1, address: 10.0.0.21, role: worker}
load_balancer: {interface: eth0, auth_pass: k8sVIP42}
"""


def test_cluster_parses_into_immutable_objects():
    cluster = parse_cluster(GOOD)
    assert str(cluster.endpoint) == "cluster-endpoint:8443" and cluster.lb_port == 8443
    assert [n.name for n in cluster.nodes] == ["cp1", "w1"]
    with pytest.raises(AttributeError):
        cluster.nodes[0].name = "x"


@pytest.mark.parametrize("text, message", [
    (GOOD.replace("role: worker", "role: wroker"),
     "cluster.yaml:5: nodes[1].role: 'wroker' is not one of control-plane, worker "
     "(did you mean 'worker'?)"),
    (GOOD.replace("port: 8443", "prot: 8443"),
     "cluster.yaml:1: control_plane.prot: unknown key\nhint: did you mean 'port'?"),
    (GOOD.replace("10.0.0.21", "10.0.0.11"), "nodes[1].address: address 10.0.0.11 is also"),
    (GOOD.replace("10.0.0.21", "10.0.0.100"), "is the control-plane VIP"),
    (GOOD.replace("service_cidr: 10.96.0.0/12", "service_cidr: 10.244.0.0/24"), "overlaps"),
    (GOOD + "networking: {}\n", "cluster.yaml:7: networking: key given twice"),
    (GOOD.replace("role: control-plane", "role: worker"), "at least one node needs role"),
    ("nodes: [\n", "not valid YAML"),
    (GOOD.replace("port: 8443", 'port: "8443"'),
     "cluster.yaml:1: control_plane.port: must be a whole number, not str"),
    (GOOD.replace("port: 8443", "port: true"),
     "control_plane.port: must be a whole number, not bool"),
    (GOOD.replace("port: 8443", "port: 70000"), "control_plane.port: 70000 is not a TCP port"),
])
def test_cluster_errors_name_line_key_and_suggest(text, message):
    with pytest.raises(ClusterConfigError) as err:
        parse_cluster(text)
    assert message in err.value.diagnostics()
    assert err.value.exit_code == ExitCode.USAGE


def test_external_etcd_hosts_are_parsed_apart_from_the_nodes():
    cluster = parse_cluster(GOOD + "etcd:\n  external:\n  - {name: etcd1, address: 10.0.0.31}\n"
                            "  - {name: etcd2, address: 10.0.0.32}\n")
    assert [(h.name, h.address, h.role) for h in cluster.etcd_hosts] == [
        ("etcd1", "10.0.0.31", "etcd"), ("etcd2", "10.0.0.32", "etcd")]
    assert cluster.etcd_endpoints == ("https://10.0.0.31:2379", "https://10.0.0.32:2379")
    assert [n.name for n in cluster.nodes] == ["cp1", "w1"]
    assert parse_cluster(GOOD).etcd_hosts == () and parse_cluster(GOOD).etcd_endpoints == ()


@pytest.mark.parametrize("etcd, message", [
    ("etcd: {exernal: []}\n", "cluster.yaml:7: etcd.exernal: unknown key\nhint: did you mean "
     "'external'?"),
    ("etcd: {}\n", "cluster.yaml:7: etcd: required key 'external' is missing"),
    ("etcd: {external: []}\n", "etcd.external"),
    ("etcd: {external: [{name: etcd1}]}\n", "etcd.external[0]: required key 'address'"),
    ("etcd: {external: [{name: cp1, address: 10.0.0.31}]}\n",
     "etcd.external[0].name: node name 'cp1' is used twice"),
    ("etcd: {external: [{name: etcd1, address: 10.0.0.21}]}\n",
     "etcd.external[0].address: address 10.0.0.21 is also node w1's"),
    ("etcd: {external: [{name: etcd1, address: 10.0.0.31, role: etcd}]}\n",
     "etcd.external[0].role: unknown key"),
])
def test_external_etcd_errors_name_the_key(etcd, message):
    with pytest.raises(ClusterConfigError) as err:
        parse_cluster(GOOD + etcd)
    assert message in err.value.diagnostics()


def test_an_external_etcd_host_is_found_as_one():
    cluster = parse_cluster(GOOD + "etcd:\n  external:\n  - {name: etcd1, address: 10.0.0.31}\n")
    for addresses, name in ((["10.0.0.31"], None), ([], "etcd1")):
        found = find_node(cluster, addresses, name)
        assert (found.name, found.role, found.is_etcd_host, found.is_control_plane) == \
            ("etcd1", "etcd", True, False)
    assert find_node(cluster, ["10.0.0.11"]).name == "cp1"


def test_find_node_by_address_or_name():
    cluster = parse_cluster(GOOD)
    assert find_node(cluster, ["127.0.0.1", "10.0.0.21"]).name == "w1"
    assert find_node(cluster, [], "cp1").name == "cp1"
    with pytest.raises(ClusterConfigError, match="did you mean 'cp1'"):
        find_node(cluster, [], "cp2")
    with pytest.raises(ClusterConfigError, match="is a node address") as err:
        find_node(cluster, ["192.168.1.1"])
    assert "--node" in err.value.hint


def test_host_writes_atomically_keeps_the_original_once_and_restores(tmp_path):
    host = Host(str(tmp_path), probes=Probes(str(tmp_path)))
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/fstab").write_text("original\n")
    assert host.write("/etc/fstab", "first\n").action == "update"
    assert host.write("/etc/fstab", "second\n").action == "update"
    assert host.write("/etc/fstab", "second\n") is None
    assert (tmp_path / "etc/fstab.kubecrate-orig").read_text() == "original\n"
    assert host.write("/etc/new.conf", "x", 0o600).action == "create"
    assert oct(os.stat(tmp_path / "etc/new.conf").st_mode & 0o777) == "0o600"
    assert not [p for p in (tmp_path / "etc").iterdir() if "tmp" in p.name]
    changes = host.restore_all()
    assert {c.path for c in changes} == {"/etc/fstab", "/etc/new.conf"}
    assert (tmp_path / "etc/fstab").read_text() == "original\n"
    assert not (tmp_path / "etc/new.conf").exists()


def test_dry_run_host_reports_but_writes_nothing(tmp_path):
    host = Host(str(tmp_path), dry_run=True, probes=Probes(str(tmp_path)))
    assert host.write("/etc/hosts", "x\n").action == "create"
    assert list(tmp_path.iterdir()) == []


def test_runner_exports_root_fails_with_argv_and_stderr_tail_and_dry_runs(tmp_path):
    runner = Runner(str(tmp_path))
    out = runner.run([sys.executable, "-c", "import os; print(os.environ['KUBECRATE_ROOT'])"])
    assert out.stdout.strip() == str(tmp_path)
    with pytest.raises(CommandFailed) as err:
        runner.run([sys.executable, "-c", "import sys; sys.exit('boom')"])
    assert err.value.argv[0] == sys.executable and "boom" in err.value.stderr_tail
    assert err.value.exit_code == ExitCode.STEP_FAILED
    printed = []
    dry = Runner(str(tmp_path), dry_run=True, echo=printed.append)
    assert dry.run(["rm", "-rf", "/nonexistent"]).returncode == 0
    assert printed == ["would run: rm -rf /nonexistent"]
    assert dry.query(["no-such-tool-kubecrate"]).returncode == 127


def test_a_second_run_cannot_take_the_lock(tmp_path):
    host = Host(str(tmp_path), probes=Probes(str(tmp_path)))
    with HostLock(host):
        with pytest.raises(LockedError, match="another kubecrate run"):
            with HostLock(host):
                pass
    with HostLock(host):
        pass


class FakeRunner:
    """Answers queries from a table; records every argv."""

    def __init__(self, answers=None):
        self.answers = answers or {}
        self.calls = []
        self.dry_run = False

    def query(self, argv, timeout=0):
        self.calls.append(list(argv))
        for prefix, (code, out) in self.answers.items():
            if tuple(argv[:len(prefix)]) == prefix:
                return Result(list(argv), code, out, "")
        return Result(list(argv), 1, "", "")

    run = query


def fake_ctx(tmp_path, answers=None, role="worker", kernel_files=None):
    kernel = tmp_path / "kernel"
    for path, text in (kernel_files or {}).items():
        (kernel / path).parent.mkdir(parents=True, exist_ok=True)
        (kernel / path).write_text(text)
    cluster = parse_cluster(GOOD)
    node = cluster.nodes[0 if role == "control-plane" else 1]
    info = SimpleNamespace(
        name="b", runtime="docker", major_release="7", os="centos", release="7",
        arch="x86_64", images_for=lambda r: (
            BundleImage("registry.k8s.io/pause:3.6", "sha256:aa", 10, ("worker",)),
            BundleImage("docker.io/flannel/flannel:v0.21.5", "sha256:bb", 10, ("worker",))),
        addons={})
    host = Host(str(tmp_path / "root"), probes=Probes(str(kernel)))
    return SimpleNamespace(host=host, runner=FakeRunner(answers), cluster=cluster, node=node,
                           info=info, etcd_certs=None, etcd_certs_path=None)


def test_xfs_with_ftype_0_under_the_docker_root_fails(tmp_path):
    ctx = fake_ctx(tmp_path, {("xfs_info",): (0, "naming =version 2 bsize=4096 ascii-ci=0 "
                                                   "ftype=0\n")},
                   kernel_files={"proc/mounts": "/dev/sda1 / ext4 rw 0 0\n"
                                                "/dev/sdb1 /var/lib xfs rw 0 0\n"})
    finding = preflight.check_filesystem(ctx)
    assert finding.level == "fail" and "ftype=0" in finding.message
    assert ctx.runner.calls == [["xfs_info", "/var/lib"]]


def test_missing_modules_fail_and_active_swap_is_a_change_to_make(tmp_path):
    ctx = fake_ctx(tmp_path, kernel_files={
        "proc/sys/kernel/osrelease": "3.10.0-1160.el7.x86_64\n",
        "proc/swaps": "Filename Type\n/dev/dm-1 partition 1 0 -2\n"})
    modules = preflight.check_modules(ctx)
    assert modules.level == "fail" and "nf_conntrack_ipv4" in modules.message
    swap = preflight.check_swap(ctx)
    assert swap.level == "warn" and "host prep turns it off now (`swapoff -a`)" in swap.message


def test_run_preflight_raises_precondition_with_every_failure(tmp_path, monkeypatch):
    ctx = fake_ctx(tmp_path)
    monkeypatch.setattr(preflight, "CHECKS", [
        lambda c: preflight.Finding("fail", "a", "first"),
        lambda c: preflight.Finding("warn", "b", "fine"),
        lambda c: [preflight.Finding("fail", "c", "second", "do this")]])
    with pytest.raises(PreconditionError) as err:
        preflight.run_preflight(ctx)
    assert err.value.exit_code == 4
    assert "a: first" in err.value.message and "c: second -> do this" in err.value.message


def test_images_present_with_the_same_id_are_skipped(tmp_path):
    listing = "registry.k8s.io/pause:3.6 sha256:aa\nflannel/flannel:v0.21.5 sha256:old\n"
    ctx = fake_ctx(tmp_path, {("docker", "images"): (0, listing)})
    ctx.info.runtime = "docker"
    ctx.node = ctx.cluster.nodes[1]
    assert images.missing_images(ctx) == ["docker.io/flannel/flannel:v0.21.5"]


def test_hosts_block_is_replaced_not_appended_twice(tmp_path):
    ctx = fake_ctx(tmp_path)
    once = hostprep.hosts_content(ctx, "127.0.0.1 localhost\n")
    assert hostprep.hosts_content(ctx, once) == once
    assert "10.0.0.100 cluster-endpoint" in once and once.startswith("127.0.0.1 localhost\n")


def test_fstab_swap_lines_are_commented_once():
    text = "/dev/a / xfs defaults 0 0\n/dev/b swap swap defaults 0 0\n"
    once = hostprep.fstab_content(text)
    assert hostprep.fstab_content(once) == once and once.count("#kubecrate") == 1
