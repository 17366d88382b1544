"""Preflight checks that look past the host itself: identity against stacked interfaces,
etcd's disk, the cluster's CIDRs against the host's routes, the other nodes' ports, VRRP and
the ARP sysctls the VIP needs (installer/steps/preflight_cluster.py)."""

import os

from installer.steps import preflight
from tests.unit.test_host_steps import fake_ctx

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
