"""Six namespace hosts (3 control planes, 3 workers) installed from one control node by
`fleet export` + ansible-playbook over real sshd (scripts/lab/fleetlab.py), from the EL7 bundle
the CentOS 7 HA run of test_ha_install.py uses (built once per session, tests/e2e/conftest.py)."""

import shutil
import time

import pytest
from lab import halab, osreleases
from lab.tools import require_tool

pytestmark = pytest.mark.e2e

FLEET_SUBNET = 41


def test_fleet_export_and_ansible_install_six_hosts_over_ssh(netns_lab, built, core,
                                                              tmp_path):
    """`fleet export` + ansible-playbook (ansible-core 2.16, real sshd in every namespace host,
    CPython 3.6.15 as each host's interpreter) install 3 control planes and 3 workers from one
    control node, the bundle copied to the first control plane only (the others fetch it from
    its bundle server); a second run changes nothing. Before that, each bad input stops the run
    before the installer changed any host: a wrong SSH key, an unreachable host, a host failing
    preflight, a host whose bundle signature fails."""
    from lab import fleetlab

    from installer.bundlecache import SIGNATURE_NAME

    for tool in ("keepalived", "haproxy", "openssl", "unshare"):
        require_tool(tool)
    names = fleetlab.names(workers=3)
    lab = netns_lab("fleet", names + ["ctl"], subnet=FLEET_SUBNET)
    fleet = fleetlab.Fleet(lab, core, tmp_path / "shiv", FLEET_SUBNET, tmp_path / "fleet")
    fleet.start_sshd()
    out = tmp_path / "project"
    done = fleet.export(built, out, "--forks", "6", "--worker-batch", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    fleet.host_vars(out)
    inventory = (out / "inventory.yml").read_text()
    assert "control_plane:" in inventory and "worker:" in inventory
    assert "first_control_plane:" in inventory

    def untouched(run, *named):
        """The run failed, named each of `named`, and no host has installer state."""
        assert run.returncode != 0, run.stdout
        for name in named:
            assert name in run.stdout, (name, run.stdout[-3000:])
        assert fleetlab.installed(fleet.nodes, names) == [], run.stdout[-3000:]

    # A wrong SSH key: every host unreachable.
    wrong = fleetlab.keygen(tmp_path / "wrong_key")
    assert wrong
    run = fleet.playbook(out, key=tmp_path / "wrong_key")
    untouched(run, "Permission denied")
    assert {r["unreachable"] for r in fleetlab.recap(run.stdout).values()} == {1}, run.stdout

    # Three hosts wrong at once, each its own way, in one run: w2 unreachable (its sshd
    # stopped), w1 failing preflight (an EL9 host for the EL7 bundle, exit 4), w3 whose copy
    # of the bundle fails its signature (its cache folder's kept .minisig damaged, exit 3).
    # Every host is checked, each is named with its own failure, and no host is changed.
    fleet.nodes["w2"].host.stop("sshd")
    os_release = fleet.nodes["w1"].root / "etc/os-release"
    kept = os_release.read_text()
    os_release.write_text(osreleases.ROCKY94)
    w3 = fleet.nodes["w3"]
    unpacked = w3.pyz(built, "unpack", built / (halab.NAME + ".tar"), "--root", w3.root)
    assert unpacked.returncode == 0, unpacked.stderr
    cache = next((w3.root / "var/lib/kubecrate/bundles").glob("*/" + SIGNATURE_NAME))
    text = cache.read_text().splitlines()
    assert text[2].startswith("trusted comment: timestamp:"), text
    text[2] = text[2].replace("timestamp:", "timestamp:9", 1)  # the trusted comment
    cache.write_text("\n".join(text) + "\n")
    run = fleet.playbook(out)
    untouched(run, "stopping before any host changes: w1, w2, w3 failed or unreachable")
    counts = fleetlab.recap(run.stdout)
    assert counts["w2"]["unreachable"] == 1, run.stdout
    assert counts["w1"]["failed"] == 1 and counts["w3"]["failed"] == 1, run.stdout
    failures = fleetlab.failures(run.stdout)
    assert "preflight" in failures["w1"] and '"rc": 4' in failures["w1"], failures
    assert "does not match its signature" in failures["w3"], failures
    assert '"rc": 3' in failures["w3"] and "UNREACHABLE" in failures["w2"], failures
    fleet.start_sshd_on("w2")
    os_release.write_text(kept)
    shutil.rmtree(str(cache.parent))

    # --check: each host's plan, nothing changed.
    run = fleet.playbook(out, "--check")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr
    # the hosts with uploads (from the runs above) plan; w2 and w3 have none yet
    planned = fleetlab.task_results(run.stdout, "kubecrate-installer.pyz plan (--check)")
    assert planned == dict({n: "changed" for n in names}, w2="skipping", w3="skipping"), \
        run.stdout[-6000:]
    assert run.stdout.count("nothing copied here yet: upload, then install everything") == 2
    assert '"host-prep",' in run.stdout and '"kubeadm"' in run.stdout, run.stdout[-6000:]
    assert fleetlab.installed(fleet.nodes, names) == []

    started = time.monotonic()
    run = fleet.playbook(out)
    install_seconds = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr
    counts = fleetlab.recap(run.stdout)
    assert sorted(counts) == sorted(names + ["localhost"]), run.stdout
    assert all(c["failed"] == 0 and c["unreachable"] == 0 for c in counts.values()), counts
    rows = halab.get_nodes(fleet.nodes["w1"], fleet.nodes["cp1"])
    assert sorted(r[0] for r in rows) == sorted(names), rows
    assert {r[1] for r in rows} == {"Ready"}, rows
    assert not (out / ".join").exists()  # fetched join.yaml removed from the control node
    for name, node in fleet.nodes.items():
        assert not (node.root / "var/tmp/kubecrate/join.yaml").exists(), name
        assert '"installed": true' in run.stdout  # status --json of each host, printed
        assert "kubecrate-installer.pyz install" in node.python36_runs(), name
    # Only the first control plane got the bundle; the others fetched it from its bundle
    # server (a real .pyz process on CPython 3.6 in cp1's namespace, pinned by join.yaml's CA
    # hash) into their caches, checked as a copied bundle is.
    tar = halab.NAME + ".tar"
    cp1 = fleet.nodes["cp1"]
    served = (cp1.root / "var/log/kubecrate-standin/kubecrate-bundle-server.log").read_text()
    for name, node in fleet.nodes.items():
        uploaded = sorted(p.name for p in (node.root / "var/tmp/kubecrate").iterdir())
        cached = [p.name for p in (node.root / "var/lib/kubecrate/bundles").iterdir()]
        assert len(cached) == 1, (name, cached)
        if name == "cp1":
            assert tar in uploaded, uploaded
            continue
        assert uploaded == sorted(["cluster.yaml", "kubecrate-installer.pyz",
                                   cached[0] + ".preflight.tar"]), uploaded
        assert '{} "GET /kubecrate/v1/bundles/{}/bundle.json'.format(
            node.host.address, cached[0]) in served, (name, served[-3000:])

    run = fleet.playbook(out)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr
    counts = fleetlab.recap(run.stdout)
    assert {name: c["changed"] for name, c in counts.items()} == \
        {name: 0 for name in names + ["localhost"]}, run.stdout[-6000:]
    print("fleet install of {} hosts: {:.0f} s".format(len(names), install_seconds))
