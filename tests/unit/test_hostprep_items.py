"""Host preparation and preflight decisions a real CentOS host depends on (issue 12 items 4,
5, 7; issue 13 items 3, 6, 10), checked with small fakes: the kernel modules of IPVS mode,
swap turned off by host prep, chrony served by the first control plane, crictl.yaml for
Docker, one --node-ip, and the yum result verified with rpm -q."""

from types import SimpleNamespace

from installer.bundleinfo import BundleImage
from installer.cluster import parse_cluster
from installer.host import Host, Probes
from installer.steps import hostprep, preflight
from tests.unit.test_host_steps import GOOD, FakeRunner

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
                  images_for=lambda role: ())
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
