"""Host preparation and preflight decisions a real CentOS host depends on, checked with small
fakes: the kernel modules of IPVS mode, swap turned off by host prep, chrony served by the first
control plane, crictl.yaml for Docker, one --node-ip, and the yum result verified with
`rpm -q`."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from installer.format.bundleinfo import BundleImage
from installer.format.cluster import ClusterConfigError, kubeadm_settings, parse_cluster
from installer.format.errors import ExitCode, StepFailed
from installer.host import Host, Probes
from installer.steps import (
    all_steps,
    hostprep,
    preflight,
    preflight_hostpolicy,
    repo,
    runtime,
    timesync,
)
from tests.unit.installer.test_host_steps import GOOD, FakeRunner

STANDINS = Path(__file__).resolve().parents[3] / "scripts" / "lab" / "hoststandins.py"
KERNEL7 = "3.10.0-1160.el7.x86_64"
BASE_DEP = ("kernel/fs/overlayfs/overlay.ko.xz:\nkernel/net/bridge/br_netfilter.ko.xz:\n"
            "kernel/net/ipv4/netfilter/nf_conntrack_ipv4.ko.xz:\n")
IPVS_DEP = "".join("kernel/net/netfilter/ipvs/{}.ko.xz: kernel/net/netfilter/ipvs/ip_vs.ko.xz\n"
                   .format(m) for m in ("ip_vs_rr", "ip_vs_wrr", "ip_vs_sh")) \
    + "kernel/net/netfilter/ipvs/ip_vs.ko.xz:\n"


def ctx_for(tmp_path, cluster_text=GOOD, answers=None, node=1, kernel_files=None,
            files=None, **info):
    kernel = tmp_path / "kernel"
    defaults = {"proc/sys/kernel/osrelease": KERNEL7 + "\n", "proc/modules": "",
                "proc/swaps": "Filename Type Size Used Priority\n",
                "lib/modules/{}/modules.dep".format(KERNEL7): BASE_DEP}
    defaults.update(kernel_files or {})
    for path, text in defaults.items():
        (kernel / path).parent.mkdir(parents=True, exist_ok=True)
        (kernel / path).write_text(text)
    root = tmp_path / "root"
    for path, text in (files or {}).items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(text)
    root.mkdir(exist_ok=True)
    cluster = parse_cluster(cluster_text)
    fields = dict(name="b", runtime="docker", major_release="7", os="centos", release="7",
                  arch="x86_64", pause_image="registry.k8s.io/pause:3.6",
                  packages_for=lambda role: ("docker-ce", "socat"), images=(
                      BundleImage("registry.k8s.io/pause:3.6", "sha256:aa", 10, ("worker",)),),
                  images_for=lambda role: (), addons={})
    fields.update(info)
    return SimpleNamespace(host=Host(str(root), probes=Probes(str(kernel))),
                           runner=FakeRunner(answers), cluster=cluster,
                           node=cluster.nodes[node], info=SimpleNamespace(**fields))


IPVS = GOOD + "kubeadm: {kube_proxy_mode: ipvs}\n"


def test_ipvs_mode_loads_and_persists_the_ip_vs_modules(tmp_path):
    ctx = ctx_for(tmp_path, IPVS, kernel_files={
        "lib/modules/{}/modules.dep".format(KERNEL7): BASE_DEP + IPVS_DEP})
    actions = [a.what for a in hostprep.HostPrepStep().actions(ctx)]
    for module in ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack_ipv4"):
        assert "load kernel module " + module in actions
    for action in hostprep.HostPrepStep().actions(ctx):
        if action.what == "write " + hostprep.MODULES_FILE:
            action.do()
    persisted = ctx.host.read_text(hostprep.MODULES_FILE).split()
    assert {"ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack_ipv4"} <= set(persisted)
    assert preflight.check_modules(ctx).level == "pass"


def test_iptables_mode_loads_no_ipvs_module(tmp_path):
    ctx = ctx_for(tmp_path)
    actions = [a.what for a in hostprep.HostPrepStep().actions(ctx)]
    assert not [a for a in actions if "ip_vs" in a]


def test_preflight_refuses_ipvs_mode_when_the_kernel_lacks_ip_vs(tmp_path):
    ctx = ctx_for(tmp_path, IPVS)
    finding = preflight.check_modules(ctx)
    assert finding.level == "fail"
    assert "ip_vs, ip_vs_rr, ip_vs_wrr, ip_vs_sh" in finding.message
    assert "kube_proxy_mode" in finding.message and "iptables" in finding.fix


FSTAB = ("/dev/mapper/centos-root / xfs defaults 0 0\n"
         "/dev/mapper/centos-swap swap swap defaults 0 0\n")


def test_host_prep_turns_swap_off_now_in_fstab_and_masks_its_units(tmp_path):
    ctx = ctx_for(tmp_path, files={"/etc/fstab": FSTAB}, kernel_files={
        "proc/swaps": "Filename Type Size Used Priority\n/dev/dm-1 partition 2097148 0 -2\n"})
    actions = [a.what for a in hostprep.HostPrepStep().actions(ctx)]
    assert "turn swap off (/dev/dm-1)" in actions and "write /etc/fstab" in actions
    assert "mask dev-dm\\x2d1.swap" in actions
    assert "mask dev-mapper-centos\\x2dswap.swap" in actions
    assert preflight.check_swap(ctx).level == "warn"


def test_masked_swap_units_and_a_commented_fstab_need_nothing_more(tmp_path):
    ctx = ctx_for(tmp_path, files={"/etc/fstab": hostprep.fstab_content(FSTAB)},
                  answers={("systemctl", "is-enabled"): (1, "masked\n")})
    actions = [a.what for a in hostprep.HostPrepStep().actions(ctx)]
    assert not [a for a in actions if "swap" in a or "fstab" in a]
    ctx.runner.answers = {}
    assert "mask dev-mapper-centos\\x2dswap.swap" in [
        a.what for a in hostprep.HostPrepStep().actions(ctx)]


def test_swap_units_are_named_as_systemd_escape_path_names_them():
    assert hostprep.swap_unit("/dev/mapper/centos-swap") == "dev-mapper-centos\\x2dswap.swap"
    assert hostprep.swap_unit("UUID=0a-1b") == "dev-disk-by\\x2duuid-0a\\x2d1b.swap"
    assert hostprep.swap_unit("/swap file") == "swap\\x20file.swap"


def test_without_ntp_servers_the_first_control_plane_serves_time_to_the_others(tmp_path):
    first = ctx_for(tmp_path / "cp1", node=0)
    conf = timesync.chrony_conf(first)
    assert "local stratum 10\n" in conf and "allow 10.0.0.0/24\n" in conf
    assert "\nserver " not in conf
    worker = timesync.chrony_conf(ctx_for(tmp_path / "w1", node=1))
    assert "server 10.0.0.11 iburst\n" in worker and "allow" not in worker
    given = ctx_for(tmp_path / "ntp", GOOD + "ntp_servers: [10.0.0.1]\n", node=0)
    conf = timesync.chrony_conf(given)
    assert "server 10.0.0.1 iburst\n" in conf and "local stratum" not in conf


def test_chrony_is_configured_after_the_repo_step_installs_it(tmp_path):
    names = [step.name for step in all_steps()]
    assert names.index("local-repo") < names.index("time") < names.index("runtime")
    ctx = ctx_for(tmp_path, GOOD + "ntp_servers: [10.0.0.1]\n")
    assert not [a.what for a in hostprep.HostPrepStep().actions(ctx) if "chrony" in a.what]
    actions = timesync.TimeStep().actions(ctx)
    assert [a.what for a in actions] == ["write /etc/chrony.conf and restart chronyd",
                                         "enable chronyd"]


def chronyc_answer(tmp_path, **clock):
    """What the chronyc stand-in (scripts/lab/hoststandins.py) prints for `clock`."""
    link = tmp_path / "bin" / "chronyc"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(STANDINS)
    (tmp_path / "chrony.json").write_text(json.dumps(clock))
    done = subprocess.run([sys.executable, str(link), "tracking"], capture_output=True,
                          text=True, timeout=60, env={**os.environ,
                                                      "KUBECRATE_STANDIN_STATE": str(tmp_path)})
    return done.returncode, done.stdout


@pytest.mark.parametrize("clock, level, words", [
    ({"offset": -0.000012}, "pass", "clock offset -0.000"),
    ({"offset": 2.5}, "fail", "2.500 s fast of NTP time"),
    ({"offset": -1.5}, "fail", "1.500 s slow of NTP time"),
    ({"offset": 0.3}, "warn", "clock offset +0.300"),
    ({"offset": 0.0, "synchronised": False}, "warn", "not synchronised"),
    ({"running": False}, "warn", "506 Cannot talk to daemon"),
])
def test_preflight_reads_the_clock_from_chronyc_tracking(tmp_path, clock, level, words):
    code, out = chronyc_answer(tmp_path / "standin", **clock)
    ctx = ctx_for(tmp_path, GOOD + "ntp_servers: [0.centos.pool.ntp.org]\n",
                  answers={("chronyc", "tracking"): (code, out)},
                  files={"/etc/chrony.conf": "server 0.centos.pool.ntp.org iburst\n"})
    finding = preflight.check_time(ctx)
    assert finding.level == level and words in finding.message, finding


def test_preflight_without_chronyc_warns_that_the_bundle_installs_it(tmp_path):
    ctx = ctx_for(tmp_path, answers={("chronyc",): (127, "")})
    finding = preflight.check_time(ctx)
    assert finding.level == "warn" and "cp1 serves time" in finding.message


def test_docker_hosts_get_a_crictl_yaml_for_the_dockershim_without_a_restart(tmp_path):
    ctx = ctx_for(tmp_path, answers={("systemctl", "is-active"): (0, "active\n"),
                                     ("systemctl", "is-enabled"): (0, "enabled\n")})
    ctx.host.write(runtime.DOCKER_CONFIG, runtime.docker_daemon_json(ctx))
    actions = runtime.RuntimeStep().actions(ctx)
    assert [a.what for a in actions] == ["write /etc/crictl.yaml"]
    actions[0].do()
    text = ctx.host.read_text("/etc/crictl.yaml")
    assert "runtime-endpoint: unix:///var/run/dockershim.sock\n" in text
    assert "image-endpoint: unix:///var/run/dockershim.sock\n" in text
    assert runtime.RuntimeStep().actions(ctx) == []


def kubelet_command_line(drop_in, env_files):
    """The kubelet's argv as systemd expands 10-kubeadm.conf's ExecStart (systemd.service(5):
    `$VAR` splits the variable's value at whitespace), the EnvironmentFile= contents given."""
    env = {}
    for text in env_files:
        for line in text.splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip().strip('"')
    for line in drop_in.splitlines():
        if line.startswith("Environment="):
            key, _, value = line[len("Environment="):].strip('"').partition("=")
            env[key] = value
    exec_start = [line for line in drop_in.splitlines() if line.startswith("ExecStart=/")][-1]
    argv = []
    for word in exec_start[len("ExecStart="):].split():
        argv.extend(env.get(word[1:], "").split() if word.startswith("$") else [word])
    return argv


def test_the_kubelet_gets_node_ip_exactly_once():
    """kubeadm writes nodeRegistration.kubeletExtraArgs into kubeadm-flags.env as
    KUBELET_KUBEADM_ARGS (kubeadm cmd/kubeadm/app/phases/kubelet/flags.go, buildKubeletArgMap
    + WriteKubeletDynamicEnvFile); the drop-in also expands /etc/sysconfig/kubelet's
    KUBELET_EXTRA_ARGS."""
    from lab import lbsamples

    from installer import kubeadmconfig
    from installer.render import render

    init = yaml.safe_load_all(kubeadmconfig.init_config(
        lbsamples.kubeadm_1_23(), lbsamples.WORKER, lbsamples.TOKEN, lbsamples.CERT_KEY))
    extra = next(d for d in init if d.get("kind") == "InitConfiguration")[
        "nodeRegistration"]["kubeletExtraArgs"]
    flags_env = 'KUBELET_KUBEADM_ARGS="--network-plugin=cni {}"\n'.format(
        " ".join("--{}={}".format(k, v) for k, v in sorted(extra.items())))
    argv = kubelet_command_line(render("10-kubeadm.conf.j2"),
                                [flags_env, render("sysconfig-kubelet.j2",
                                                   node_ip=lbsamples.WORKER.address)])
    assert [a for a in argv if a.startswith("--node-ip")] == ["--node-ip=10.213.0.21"]


class ConfReadingRunner(FakeRunner):
    """Also keeps the text of the yum.conf a `yum -c CONF` query names (preflight removes it)."""

    def query(self, argv, timeout=0):
        if argv[:2] == ["yum", "-c"]:
            self.conf = Path(argv[2]).read_text()
        return super().query(argv, timeout)


def test_preflight_yum_dry_run_turns_autosavets_off(tmp_path):
    ctx = ctx_for(tmp_path, repo_path="repo", gpgkeys=("repo/KEY",))
    ctx.runner = ConfReadingRunner({("yum",): (1, "Exiting on user command\n")})
    ctx.source_dir, ctx.node = str(tmp_path / "src"), ctx.cluster.nodes[1]
    assert preflight.check_packages(ctx).level == "pass"
    main = ctx.runner.conf.split("[kubecrate]")[0]
    assert "[main]\n" in main and "\nautosavets=0\n" in main


def test_packages_yum_skipped_are_refused_by_name(tmp_path):
    ctx = ctx_for(tmp_path, repo_path="repo", digest="d" * 64,
                  answers={("yum",): (0, "No package socat available.\n"),
                           ("rpm", "-q"): (1, "docker-ce-20.10.24-3.el7.x86_64\n"
                                              "package socat is not installed\n")})
    ctx.bundle_host_dir = "/var/lib/kubecrate/bundles/" + "d" * 64
    with pytest.raises(StepFailed) as err:
        repo.install_packages(ctx, ["docker-ce", "socat"])
    assert "yum exited 0 but 1 package(s) are not installed: socat" in err.value.message
    assert ["yum", "-y", "--disablerepo=*", "--enablerepo=kubecrate", "install", "docker-ce",
            "socat"] in ctx.runner.calls
    ctx.runner.answers[("rpm", "-q")] = (0, "")
    repo.install_packages(ctx, ["docker-ce", "socat"])


@pytest.mark.parametrize("packages, level", [
    (("docker-ce", "iproute-tc"), "pass"),
    (("docker-ce", "iproute-tc-5.18.0-1.el8"), "pass"),
    (("docker-ce", "iproute"), "warn"),
])
def test_el8_tc_warns_only_when_the_bundle_does_not_install_iproute_tc(tmp_path, packages,
                                                                       level):
    ctx = ctx_for(tmp_path, major_release="8", runtime="containerd",
                  packages_for=lambda role: packages)
    found = [f for f in preflight.check_el8(ctx) if f.check == "tc"]
    assert [f.level for f in found] == [level]


def test_an_image_repository_the_bundle_does_not_carry_is_refused_naming_the_key(tmp_path):
    source = tmp_path / "cluster.yaml"
    source.write_text(GOOD + "kubeadm:\n  image_repository: registry.example.com/k8s\n")
    cluster = parse_cluster(source.read_text(), str(source))
    with pytest.raises(ClusterConfigError) as err:
        kubeadm_settings(cluster, "v1.23.17", "registry.k8s.io", "docker")
    text = err.value.diagnostics()
    assert "cluster.yaml:8" in text and "kubeadm.image_repository" in text
    assert "registry.example.com/k8s/pause" in text and "registry.example.com/k8s/coredns" in text
    assert "remove kubeadm.image_repository" in text
    assert err.value.exit_code == ExitCode.USAGE
    same = parse_cluster(GOOD + "kubeadm: {image_repository: registry.k8s.io}\n")
    assert kubeadm_settings(same, "v1.23.17", "registry.k8s.io", "docker").image_repository \
        == "registry.k8s.io"


def test_keepalived_priority_follows_cluster_yaml_order_not_name_order():
    """The first control plane in cluster.yaml initialises the cluster and must hold the VIP
    first; names that sort the other way round prove the order is cluster.yaml's."""
    import re

    from installer import lbconfig

    cluster = parse_cluster(GOOD.replace(
        "  - {name: cp1, address: 10.0.0.11, role: control-plane}\n",
        "  - {name: master-b, address: 10.0.0.12, role: control-plane}\n"
        "  - {name: master-a, address: 10.0.0.11, role: control-plane}\n"))
    lb = cluster.load_balancer
    seen = {}
    for name in ("master-a", "master-b"):
        text = lbconfig.keepalived_conf(lb, name)
        seen[name] = (re.search(r"state (\w+)", text).group(1),
                      int(re.search(r"priority (\d+)", text).group(1)))
    assert seen["master-b"][0] == "MASTER" and seen["master-a"][0] == "BACKUP"
    assert seen["master-b"][1] > seen["master-a"][1]


def test_a_file_replaced_atomically_keeps_its_selinux_label(tmp_path):
    """rename(2) keeps the new inode's label (its folder's type), not the target's: the
    installer copies the replaced file's security.selinux label (installer/atomic.py).
    Setting a security.* attribute needs root, as the installer has on a host."""
    label = b"system_u:object_r:container_config_t:s0\x00"
    host = Host(str(tmp_path / "root"), probes=Probes(str(tmp_path)))
    host.write("/etc/docker/daemon.json", "{}\n")
    real = host.path("/etc/docker/daemon.json")
    try:
        os.setxattr(real, "security.selinux", label)
    except PermissionError:
        pytest.fail("setting security.selinux needs root: run the unit tests as root")
    assert host.write("/etc/docker/daemon.json", '{"a": 1}\n').action == "update"
    assert os.getxattr(real, "security.selinux") == label
    source = tmp_path / "kubeadm"
    source.write_bytes(b"#!/bin/sh\n")
    host.write("/usr/bin/kubeadm", b"old", 0o755)
    os.setxattr(host.path("/usr/bin/kubeadm"), "security.selinux", label)
    host.copy_in(str(source), "/usr/bin/kubeadm")
    assert os.getxattr(host.path("/usr/bin/kubeadm"), "security.selinux") == label


# ------------------------------------------------------------------ selinux: enforcing


ENFORCING = GOOD + "selinux: enforcing\n"
SELINUX_CONFIG = {"/etc/selinux/config": "SELINUX=enforcing\nSELINUXTYPE=targeted\n"}
ENFORCE = {"sys/fs/selinux/enforce": "1\n"}


def test_selinux_key_is_checked_with_a_suggestion():
    assert parse_cluster(GOOD).selinux == "permissive" and not parse_cluster(GOOD).enforcing
    assert parse_cluster(ENFORCING).enforcing
    with pytest.raises(ClusterConfigError, match=r"selinux: 'enforced' is not one of "
                                                 r"permissive, enforcing \(did you mean"):
        parse_cluster(GOOD + "selinux: enforced\n")


def test_host_prep_sets_permissive_only_when_cluster_yaml_does_not_ask_for_enforcing(tmp_path):
    permissive = [a.what for a in hostprep.HostPrepStep().actions(ctx_for(
        tmp_path / "p", kernel_files=ENFORCE, files=SELINUX_CONFIG))]
    assert "set SELinux permissive now" in permissive
    assert "write /etc/selinux/config" in permissive
    enforcing = [a.what for a in hostprep.HostPrepStep().actions(ctx_for(
        tmp_path / "e", ENFORCING, kernel_files=ENFORCE, files=SELINUX_CONFIG))]
    assert not [a for a in enforcing if "SELinux" in a or "selinux" in a], enforcing


@pytest.mark.parametrize("mode, installed, carried, levels", [
    ("1\n", True, False, ["pass", "pass"]),
    ("1\n", False, True, ["pass", "pass"]),
    ("1\n", False, False, ["pass", "fail"]),
    ("0\n", False, True, ["warn", "pass"]),
    (None, False, True, ["fail", "pass"]),
])
def test_preflight_for_an_enforcing_cluster(tmp_path, mode, installed, carried, levels):
    answers = {("rpm", "-q", "container-selinux"):
               (0, "container-selinux-2.119.2-1.911c772.el7_8.noarch\n")} if installed else {}
    carried_files = ("repo/repodata/repomd.xml",
                     "repo/Packages/socat-1.7.3.2-2.el7.x86_64.rpm") + \
        (("repo/Packages/container-selinux-2.119.2-1.911c772.el7_8.noarch.rpm",)
         if carried else ())
    ctx = ctx_for(tmp_path, ENFORCING, answers, kernel_files={} if mode is None else {
        "sys/fs/selinux/enforce": mode}, repo_path="repo")
    ctx.info.files = carried_files
    found = preflight_hostpolicy.check_selinux(ctx)
    assert [f.level for f in found] == levels, found
    if not installed and not carried:
        assert "add container-selinux to the recipe's packages" in found[1].fix
