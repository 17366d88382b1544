"""`reset` undoes only what state.json records kubecrate changed: units it started or enabled,
units it stopped or disabled, firewalld rules it added; `reset --host` also puts every file
host prep changed back from its kept original. systemctl and firewall-cmd are never
redirected by --root, so a fake runner plays them here (docs/testing.md)."""

import os

import pytest

from installer import owned, reset
from installer.runner import Result
from installer.steps import hostprep, loadbalancer, run_steps
from tests.unit.installer.test_ha_steps import CLUSTER, make_ctx


class UnitsRunner:
    """systemctl and firewall-cmd with state, as the real ones answer; everything else
    succeeds silently. Records every argv."""

    def __init__(self, active=(), enabled=()):
        self.active, self.enabled = set(active), set(enabled)
        self.ports, self.protocols, self.trusted = set(), set(), set()
        self.masquerade = False
        self.calls = []
        self.dry_run = False

    def run(self, argv, check=True, readonly=False, timeout=0, hint=None, stdin=None):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        if argv[0] == "systemctl" and len(argv) > 2:
            verb, unit = argv[1], argv[-1]
            if verb == "is-active":
                on = unit in self.active
                return Result(argv, 0 if on else 3, "active" if on else "inactive", "")
            if verb == "is-enabled":
                on = unit in self.enabled
                return Result(argv, 0 if on else 1, "enabled" if on else "disabled", "")
            {"start": self.active.add, "restart": self.active.add,
             "stop": self.active.discard, "enable": self.enabled.add,
             "disable": self.enabled.discard}.get(verb, lambda u: None)(unit)
        if argv[0] == "firewall-cmd":
            return self._firewall(argv)
        return Result(argv, 0, "", "")

    def _firewall(self, argv):
        out, code = "", 0
        for arg in argv[1:]:
            name, _, value = arg.partition("=")
            table = {"port": self.ports, "protocol": self.protocols,
                     "interface": self.trusted}
            if name == "--list-ports":
                out = " ".join(sorted(self.ports))
            elif name == "--list-protocols":
                out = " ".join(sorted(self.protocols))
            elif name == "--list-interfaces":
                out = " ".join(sorted(self.trusted))
            elif name == "--query-masquerade":
                code = 0 if self.masquerade else 1
            elif name in ("--add-masquerade", "--remove-masquerade"):
                self.masquerade = name == "--add-masquerade"
            elif name.startswith("--add-"):
                table[name[6:]].add(value)
            elif name.startswith("--remove-"):
                table[name[9:]].discard(value)
        return Result(argv, code, out, "")

    def query(self, argv, timeout=0):
        return self.run(argv, check=False, readonly=True)

    def mutating(self):
        return [c for c in self.calls if (c[0] == "systemctl" and c[1] not in (
            "is-active", "is-enabled")) or (c[0] == "firewall-cmd" and not any(
                a.startswith(("--list-", "--query-")) for a in c))]


def test_reset_leaves_a_keepalived_kubecrate_never_touched_alone(tmp_path):
    # A workstation (or a host whose operator runs its own keepalived and haproxy): nothing
    # of kubecrate's in state.json, so reset has nothing to stop or disable.
    runner = UnitsRunner(active={"keepalived", "haproxy"}, enabled={"keepalived", "haproxy"})
    root = tmp_path / "root"
    root.mkdir()
    planned = reset.reset_cluster(str(root), dry_run=True, runner=runner)
    changes = reset.reset_host(str(root), runner=runner)
    assert not [c for c in planned + changes if "keepalived" in c or "haproxy" in c]
    assert runner.mutating() == []
    assert runner.active == runner.enabled == {"keepalived", "haproxy"}


def test_reset_stops_and_disables_only_the_units_the_install_started(tmp_path):
    ctx = make_ctx(tmp_path, "cp1")
    runner = UnitsRunner(active={"haproxy"}, enabled={"haproxy"})  # the operator's haproxy
    runner.active.add("keepalived-vip")  # a unit kubecrate does not know
    ctx.runner = runner
    ctx.runner.run = _with_vip(runner)
    run_steps(ctx, [loadbalancer.LoadBalancerStep()])
    assert {"keepalived", "haproxy"} <= runner.active
    assert owned.units(ctx.host) == {"keepalived": {"step": "loadbalancer",
                                                    "changes": ["enabled", "started"]}}
    before = len(runner.calls)
    changes = reset.reset_cluster(ctx.host.root, runner=runner)
    assert [c for c in changes if c.startswith(("stop", "disable"))] == [
        "stop keepalived (kubecrate started it)", "disable keepalived (kubecrate enabled it)"]
    assert [c for c in runner.calls[before:] if c[0] == "systemctl"
            and c[1] not in ("is-active", "is-enabled")] == [
        ["systemctl", "stop", "keepalived"], ["systemctl", "disable", "keepalived"]]
    assert runner.active == {"haproxy", "keepalived-vip"} and runner.enabled == {"haproxy"}
    assert owned.units(ctx.host) == {}
    assert reset.reset_cluster(ctx.host.root, runner=runner) == []


def _with_vip(runner):
    """`ip addr` shows the VIP once keepalived runs (the first node waits for it)."""
    plain = runner.run

    def run(argv, **kwargs):
        if list(argv[:3]) == ["ip", "-o", "-4"]:
            up = "keepalived" in runner.active
            return Result(list(argv), 0, "2: eth0 inet 10.0.0.100/32\n" if up else "", "")
        return plain(argv, **kwargs)
    return run


@pytest.mark.parametrize("policy", ["disable", "open-ports"])
def test_reset_host_puts_firewalld_and_host_files_back(tmp_path, policy):
    text = CLUSTER + "firewall: {}\n".format(policy)
    ctx = make_ctx(tmp_path, "cp1", text=text)
    root = ctx.host.root
    for rel, body in (("etc/selinux/config", "SELINUX=enforcing\n"),
                      ("etc/fstab", "/dev/mapper/centos-swap swap swap defaults 0 0\n"),
                      ("etc/hosts", "127.0.0.1 localhost\n")):
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        with open(os.path.join(root, rel), "w") as out:
            out.write(body)
    runner = UnitsRunner(active={"firewalld"}, enabled={"firewalld"})
    runner.ports.add("22/tcp")  # the operator's own rule
    ctx.runner = runner
    run_steps(ctx, [hostprep.HostPrepStep()])
    if policy == "disable":
        assert "firewalld" not in runner.active | runner.enabled
    else:
        assert {"6443/tcp", "30000-32767/tcp", "8472/udp"} <= runner.ports
        assert runner.trusted == {"cni0", "flannel.1"} and runner.masquerade
    assert ctx.host.read_text("/etc/selinux/config") == "SELINUX=permissive\n"

    changes = reset.reset_host(root, runner=runner)
    assert runner.active == runner.enabled == {"firewalld"}
    assert runner.ports == {"22/tcp"} and not runner.trusted and not runner.masquerade
    assert not runner.protocols
    assert ctx.host.read_text("/etc/selinux/config") == "SELINUX=enforcing\n"
    assert ctx.host.read_text("/etc/fstab").startswith("/dev/mapper/centos-swap swap")
    assert ctx.host.read_text("/etc/hosts") == "127.0.0.1 localhost\n"
    for rel in ("/etc/modules-load.d/kubecrate.conf", "/etc/sysctl.d/90-kubecrate.conf",
                "/etc/selinux/config.kubecrate-orig"):
        assert not ctx.host.exists(rel), rel
    assert "restore /etc/selinux/config" in changes
    assert owned.units(ctx.host) == {} and owned.firewall_rules(ctx.host) == []


@pytest.mark.parametrize("name, vrrp, api", [("cp1", True, True), ("w1", False, False)])
def test_open_ports_gives_flannel_and_nodeports_what_they_need_once(tmp_path, name, vrrp, api):
    ctx = make_ctx(tmp_path, name, text=CLUSTER + "firewall: open-ports\n")
    runner = UnitsRunner(active={"firewalld"}, enabled={"firewalld"})
    ctx.runner = runner
    run_steps(ctx, [hostprep.HostPrepStep()])
    # NodePorts answer on every node (kube-proxy), flannel's VXLAN between all of them, and
    # pod traffic forwarded cni0 <-> flannel.1 must not hit firewalld's FORWARD reject.
    assert {"30000-32767/tcp", "8472/udp", "10250/tcp"} <= runner.ports
    assert ("6443/tcp" in runner.ports) == api and ("8443/tcp" in runner.ports) == api
    assert runner.protocols == ({"vrrp"} if vrrp else set())
    assert runner.masquerade and runner.trusted == {"cni0", "flannel.1"}
    zoned = [c for c in runner.calls if "--zone=trusted" in c and "--permanent" in c
             and any(a.startswith("--add-") for a in c)]
    assert zoned == [["firewall-cmd", "--permanent", "--zone=trusted",
                      "--add-interface=cni0", "--add-interface=flannel.1"]]
    assert hostprep.missing_firewall_rules(ctx) == []


def test_a_unit_host_prep_masked_is_unmasked_by_reset_host_only(tmp_path):
    # e.g. a swap unit: host prep masks it through owned.systemctl, reset --host unmasks it
    ctx = make_ctx(tmp_path, "w1")
    runner = UnitsRunner()
    owned.systemctl(ctx.host, runner, "host-prep", "mask", "dev-mapper-centos\\x2dswap.swap")
    assert reset.reset_cluster(ctx.host.root, runner=runner) == []
    changes = reset.reset_host(ctx.host.root, runner=runner)
    assert "unmask dev-mapper-centos\\x2dswap.swap (kubecrate masked it)" in changes
    assert ["systemctl", "unmask", "dev-mapper-centos\\x2dswap.swap"] in runner.calls


def test_reset_removes_the_registrys_and_the_bundle_servers_files_and_stops_them(tmp_path):
    # What the registry and bundle-server steps leave on a control plane: the units (written
    # and started through owned.restart_unit), config.yml, and the serving certificates that
    # bundleserve.issue_certificate puts beside them.
    from installer import bundleserve, registryserve
    from installer.steps import bundleserver

    ctx = make_ctx(tmp_path, "cp1")
    runner = UnitsRunner()
    written = [registryserve.CONFIG, registryserve.UNIT_FILE, bundleserver.UNIT_FILE]
    for path in written:
        ctx.host.write(path, "written by the step\n")
    certs = [registryserve.CERT, registryserve.KEY, bundleserve.SERVER_DIR + "/server.crt",
             bundleserve.SERVER_DIR + "/server.key"]
    for path in certs:
        os.makedirs(os.path.dirname(ctx.host.path(path)), exist_ok=True)
        with open(ctx.host.path(path), "w") as out:
            out.write("PEM\n")
    owned.restart_unit(ctx.host, runner, "registry", registryserve.UNIT)
    owned.restart_unit(ctx.host, runner, "bundle-server", bundleserver.UNIT)
    storage = ctx.host.path(registryserve.STORAGE + "/docker/registry/v2/x")
    os.makedirs(storage)

    changes = reset.reset_cluster(ctx.host.root, runner=runner)
    assert not runner.active and not runner.enabled
    for path in written + certs:
        assert not ctx.host.exists(path), path
        assert "remove " + path in changes
    for folder in (registryserve.REGISTRY_DIR, bundleserve.SERVER_DIR):
        assert not os.path.exists(ctx.host.path(folder)), folder
    assert os.path.isdir(storage)  # the images stay, like the bundle cache (docs/cluster.md)
    assert runner.calls[-1] == ["systemctl", "daemon-reload"]  # the units' files are gone
    assert reset.reset_cluster(ctx.host.root, runner=runner) == []
