"""Preflight checks that look past the host itself: identity against stacked interfaces,
etcd's disk, the cluster's CIDRs against the host's routes, the other nodes' ports, VRRP and
the ARP sysctls the VIP needs (installer/steps/preflight_cluster.py)."""

import os

from installer.steps import preflight, preflight_cluster
from tests.unit.installer.test_host_steps import fake_ctx

MAC = "52:54:00:aa:bb:01\n"


def _links(tmp_path, links):
    files = {}
    for name, (mac, devtype) in links.items():
        files["sys/class/net/{}/address".format(name)] = mac
        files["sys/class/net/{}/uevent".format(name)] = \
            "INTERFACE={}\n".format(name) + ("DEVTYPE={}\n".format(devtype) if devtype else "")
    return files


def test_bonds_and_vlans_sharing_a_mac_are_not_clones_but_two_nics_are(tmp_path):
    # bond0 gives eth0 and eth1 its MAC; bond0.100 (a VLAN) takes bond0's: one machine.
    files = _links(tmp_path, {"eth0": (MAC, None), "eth1": (MAC, None), "bond0": (MAC, "bond"),
                              "bond0.100": (MAC, "vlan"), "eth2": ("52:54:00:aa:bb:02\n", None),
                              "eth3": ("52:54:00:aa:bb:03\n", None)})
    ctx = fake_ctx(tmp_path, kernel_files=files)
    for port in ("eth0", "eth1"):
        os.symlink("../bond0", str(tmp_path / "kernel/sys/class/net" / port / "master"))
    found = preflight.check_identity(ctx)
    assert found.level == "pass", found
    # two plain NICs with one MAC: a clone's leftover, or a hypervisor mistake
    (tmp_path / "kernel/sys/class/net/eth3/address").write_text("52:54:00:aa:bb:02\n")
    found = preflight.check_identity(ctx)
    assert found.level == "warn" and "eth3" in found.message and "bond0" not in found.message


def _route_line(iface, network):
    import ipaddress
    import socket
    import struct
    net = ipaddress.ip_network(network)

    def hexed(address):
        return "{:08X}".format(struct.unpack("<I", socket.inet_aton(str(address)))[0])
    return "{}\t{}\t00000000\t0001\t0\t0\t0\t{}\t0\t0\t0\n".format(
        iface, hexed(net.network_address), hexed(net.netmask))


ROUTE_HEADER = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"


def test_etcd_disk_verdicts_follow_etcds_10ms_p99_and_workers_are_not_measured(tmp_path):
    ctx = fake_ctx(tmp_path, role="control-plane")
    (tmp_path / "root/var/lib").mkdir(parents=True)
    measured = []

    def measure(ms):
        def run(folder):
            measured.append(folder)
            return [0.001] * 98 + [ms / 1000.0] * 2
        return run
    assert preflight_cluster.check_etcd_disk(ctx, measure(3))[0].level == "pass"
    slow = preflight_cluster.check_etcd_disk(ctx, measure(40))[0]
    assert slow.level == "warn" and "p99 40.0 ms" in slow.message and "SSD" in slow.fix
    assert preflight_cluster.check_etcd_disk(ctx, measure(250))[0].level == "fail"
    # /var/lib/etcd does not exist yet: the nearest folder above it, under the root
    assert set(measured) == {str(tmp_path / "root/var/lib")}
    worker = fake_ctx(tmp_path / "w", role="worker")
    assert preflight_cluster.check_etcd_disk(worker, measure(250)) == []


def test_the_fsync_probe_is_bounded_in_writes_and_time_and_leaves_nothing(tmp_path):
    samples = preflight_cluster.fsync_latencies(str(tmp_path))
    assert 0 < len(samples) <= preflight_cluster.FSYNC_WRITES
    assert list(tmp_path.iterdir()) == []
    ticks = iter(range(10 ** 6))  # a disk where each fdatasync takes a whole second
    slow = preflight_cluster.fsync_latencies(str(tmp_path), clock=lambda: float(next(ticks)),
                                             sync=lambda fd: None)
    assert len(slow) <= preflight_cluster.FSYNC_BUDGET_S and list(tmp_path.iterdir()) == []


def test_pod_or_service_cidr_over_a_host_route_or_address_fails(tmp_path):
    trie = ("Local:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.0.0.11\n        /32 host LOCAL\n"
            "     |-- 10.96.0.20\n        /32 host LOCAL\n")
    routes = ROUTE_HEADER + _route_line("eth0", "0.0.0.0/0") + \
        _route_line("eth0", "10.0.0.0/24") + _route_line("eth1", "10.244.128.0/20") + \
        _route_line("cni0", "10.244.1.0/24")  # kubecrate's own, on a re-run
    ctx = fake_ctx(tmp_path, kernel_files={"proc/net/fib_trie": trie, "proc/net/route": routes})
    found = preflight_cluster.check_cidrs(ctx)
    assert [f.level for f in found] == ["fail", "fail"]
    assert "pod_cidr 10.244.0.0/16 overlaps this host's route 10.244.128.0/20 on eth1" \
        in found[0].message and "cni0" not in found[0].message
    assert "service_cidr 10.96.0.0/12 overlaps this host's address 10.96.0.20" in found[1].message
    clean = fake_ctx(tmp_path / "c", kernel_files={"proc/net/route": ROUTE_HEADER + _route_line(
        "eth0", "0.0.0.0/0") + _route_line("eth0", "10.0.0.0/24")})
    assert [f.level for f in preflight_cluster.check_cidrs(clean)] == ["pass"]


def test_a_joining_node_warns_about_dropped_ports_of_the_other_nodes(tmp_path):
    ctx = fake_ctx(tmp_path, role="worker")
    assert preflight_cluster.check_reachability(ctx) == []  # the first node: nothing to reach
    ctx.join = object()
    asked = []

    def probe(address, port):
        asked.append((address, port))
        return "timeout" if port == 2380 else "refused"
    found = preflight_cluster.check_reachability(ctx, probe)
    assert asked == [("10.0.0.11", p) for p in (6443, 2379, 2380, 10250)]
    assert found[0].level == "warn" and found[0].message == "cp1 10.0.0.11:2380 timed out"
    ok = preflight_cluster.check_reachability(ctx, lambda a, p: "open")
    assert ok[0].level == "pass"


def test_vrrp_interface_and_a_host_firewall_that_drops_protocol_112(tmp_path):
    show = ("ip", "-o", "-4", "addr", "show", "dev", "eth0")
    good = fake_ctx(tmp_path, role="control-plane", answers={
        show: (0, "2: eth0    inet 10.0.0.11/24 brd 10.0.0.255 scope global eth0\n"),
        ("iptables",): (0, "-P INPUT ACCEPT\n")})
    assert [f.level for f in preflight_cluster.check_vrrp(good)] == ["pass"]
    missing = fake_ctx(tmp_path / "m", role="control-plane", answers={show: (1, "")})
    found = preflight_cluster.check_vrrp(missing)
    assert found[0].level == "fail" and "eth0 does not exist" in found[0].message
    walled = fake_ctx(tmp_path / "w", role="control-plane", answers={
        show: (0, "2: eth0    inet 10.0.0.11/24\n"),
        ("iptables",): (0, "-P INPUT ACCEPT\n-A INPUT -j REJECT --reject-with "
                           "icmp-host-prohibited\n")})
    found = preflight_cluster.check_vrrp(walled)
    assert found[0].level == "warn" and "-p vrrp" in found[0].fix
    assert preflight_cluster.check_vrrp(fake_ctx(tmp_path / "x", role="worker")) == []


def test_arp_ignore_that_silences_the_vip_fails(tmp_path):
    def ctx_with(all_value, eth0_value, folder):
        return fake_ctx(tmp_path / folder, role="control-plane", kernel_files={
            "proc/sys/net/ipv4/conf/all/arp_ignore": all_value,
            "proc/sys/net/ipv4/conf/eth0/arp_ignore": eth0_value})
    assert preflight_cluster.check_arp(ctx_with("0\n", "0\n", "a"))[0].level == "pass"
    assert preflight_cluster.check_arp(ctx_with("0\n", "2\n", "b"))[0].level == "warn"
    dead = preflight_cluster.check_arp(ctx_with("8\n", "0\n", "c"))[0]
    assert dead.level == "fail" and "never answers ARP" in dead.message


def test_preflight_runs_the_cluster_checks_in_its_report(tmp_path):
    ctx = fake_ctx(tmp_path, role="control-plane")
    names = [f.check for check in preflight.CHECKS if check is preflight.check_cluster
             for f in check(ctx)]
    assert names == ["cidrs", "etcd-disk", "vrrp", "arp"]  # no join: nothing to reach


def test_a_shared_product_uuid_or_machine_id_is_a_clone_but_unknown_values_are_not():
    from installer.steps.clones import Identity, duplicates
    mine = Identity("w2", "aa" * 16, "4C4C4544-0042-3510-8051-B4C04F4B4E32")
    others = [Identity("cp1", "bb" * 16, "4c4c4544-0042-3510-8051-b4c04f4b4e32"),
              Identity("w1", "AA" * 16, ""), Identity("w2", "aa" * 16, mine.system_uuid),
              Identity("cp2", "", "")]
    assert duplicates(mine, others) == [
        "node cp1 already in the cluster has the same product_uuid "
        "4C4C4544-0042-3510-8051-B4C04F4B4E32",
        "node w1 already in the cluster has the same /etc/machine-id " + "aa" * 16]
    assert duplicates(Identity("w3", "", ""), others) == []


def test_external_etcd_needs_its_files_on_the_first_control_plane_and_no_disk_probe(tmp_path):
    from installer.format.cluster import parse_cluster
    from tests.unit.installer.test_host_steps import GOOD

    ctx = fake_ctx(tmp_path, role="control-plane")
    ctx.cluster = parse_cluster(GOOD + "etcd:\n  external:\n  - {name: etcd1, address: "
                                "10.0.0.31}\n")
    (tmp_path / "root/etc/kubernetes/pki/etcd").mkdir(parents=True)
    (tmp_path / "root/etc/kubernetes/pki/etcd/ca.crt").write_text("CA")
    found = preflight_cluster.check_external_etcd_files(ctx)
    assert [(f.level, f.check) for f in found] == [("fail", "external-etcd")]
    assert found[0].message.startswith("/etc/kubernetes/pki/apiserver-etcd-client.crt, "
                                       "/etc/kubernetes/pki/apiserver-etcd-client.key missing")
    assert found[0].fix.startswith("pass --etcd-certs FILE: the first etcd host etcd1 "
                                   "(10.0.0.31) writes /etc/kubernetes/kubecrate/etcd-certs.json")
    for name in ("apiserver-etcd-client.crt", "apiserver-etcd-client.key"):
        (tmp_path / "root/etc/kubernetes/pki" / name).write_text("x")
    assert [f.level for f in preflight_cluster.check_external_etcd_files(ctx)] == ["pass"]
    assert preflight_cluster.check_etcd_disk(ctx, measure=lambda folder: 1 / 0) == []
    ctx.cluster = parse_cluster(GOOD)  # stacked etcd: nothing to copy
    assert preflight_cluster.check_external_etcd_files(ctx) == []
