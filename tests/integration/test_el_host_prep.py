"""Host prep on EL8 and EL9 hosts for the bundles of elbuilds.py: podman and runc removed as the
EL8 recipe says before real dnf installs the bundle, and containerd's config judged by the real
containerd 1.6 (docs/el8-el9.md)."""

from __future__ import annotations

import re

import pytest
from lab import hostworld, osreleases
from lab.dnfroot import dnf, installed, write_config
from lab.runtimes import private_containerd
from lab.tools import require_tool

from builder.inputs.mirrors import load_preset
from tests.integration.elbuilds import EL8, minimal_el9_root

pytestmark = pytest.mark.integration


def test_host_prep_removes_podman_and_runc_then_installs_the_el8_bundle(el_builds,
                                                                        mirror_world,
                                                                        tmp_path):
    """EL8 conflicts (docs/el8-el9.md): on a CentOS 8.5 host with podman (and so runc) preflight
    names both and says host prep removes them (the recipe's `remove`); `install --host-only`
    removes exactly those with `rpm -e`, then real dnf installs the bundle from its repo
    alone."""
    for tool in ("dnf", "rpm"):
        require_tool(tool)
    preset = load_preset(mirror_world.preset_el8)
    world = {r.id: (r.baseurl, [k.url for k in r.gpgkeys]) for r in preset.yum.values()
             if r.id in ("baseos", "appstream")}
    conf, repos_d = write_config(tmp_path / "world", world)
    core = tmp_path / "core"
    core.mkdir()
    dnf(core, conf, repos_d, *EL8, "install", "filesystem", "bash", "podman", "chrony")
    host = hostworld.make_host(tmp_path / "host", core, osreleases.CENTOS8,
                               hostworld.KERNEL_EL8)
    before = installed(host.root)
    assert {"podman", "runc"} <= set(before) and "buildah" not in before
    argv = ("--bundle", str(el_builds["upstream"]), "--cluster", str(host.cluster),
            "--key", str(el_builds["public_key"]), "--root", str(host.root))
    checked = host.installer("preflight", *argv)
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    assert "conflicts: podman, runc installed: containerd.io obsoletes and conflicts with " \
           "runc, which podman require; host prep removes exactly these (`rpm -e podman " \
           "runc`" in output, output
    done = host.installer("install", "--host-only", *argv)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "remove podman runc (the bundle's remove_packages" in done.stdout, done.stdout
    removals = [c for c in host.calls() if c[:2] == ["rpm", "-e"]]
    # preflight's read-only proof (preflight, then install's own), then the removal itself
    assert removals == [["rpm", "-e", "--test", "podman", "runc"]] * 2 + [
        ["rpm", "-e", "podman", "runc"]], removals
    after = installed(host.root)
    assert not {"podman", "runc"} & set(after)
    assert set(before) - set(after) == {"podman", "runc"}  # nothing else went
    assert after["containerd.io"] == ["1.6.32-3.1.el8.x86_64"]
    assert after["iproute-tc"] == ["5.12.0-4.el8.x86_64"]


def test_el9_host_prep_for_containerd_judged_by_real_containerd(el_builds, mirror_world,
                                                               tmp_path):
    """containerd host prep (docs/el8-el9.md): `install --host-only` of the EL9 bundle on a Rocky
    9.4-shaped host writes config.toml (version 2, SystemdCgroup, the bundled pause as
    sandbox_image) and /etc/crictl.yaml; real containerd 1.6 then runs on exactly that file
    with its CRI plugin up and reports both settings; a second run imports the worker's images
    into that containerd with `ctr -n k8s.io images import -`, and a third changes nothing."""
    for tool in ("dnf", "rpm", "containerd", "ctr"):
        require_tool(tool)
    core = minimal_el9_root(mirror_world.preset_el9, tmp_path / "core")
    host = hostworld.make_host(tmp_path / "host", core, osreleases.ROCKY94,
                               hostworld.KERNEL_EL9)
    argv = ("install", "--host-only", "--bundle", str(el_builds["el9-upstream"]), "--cluster",
            str(host.cluster), "--key", str(el_builds["public_key"]), "--root", str(host.root))
    first = host.installer(*argv)
    assert first.returncode == 0, first.stdout + first.stderr
    config = host.file("/etc/containerd/config.toml")
    assert 'sandbox_image = "registry.k8s.io/pause:3.9"' in config.read_text()
    assert host.file("/etc/crictl.yaml").read_text().splitlines()[1:3] == [
        "runtime-endpoint: unix:///run/containerd/containerd.sock",
        "image-endpoint: unix:///run/containerd/containerd.sock"]
    assert ["systemctl", "restart", "containerd"] in host.calls()

    with private_containerd(config) as daemon:
        plugins = daemon.run("plugins", "ls", text=True).stdout
        assert re.search(r"io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok", plugins), plugins
        log = daemon.log.read_text()
        assert "SandboxImage:registry.k8s.io/pause:3.9 " in log, daemon.log_tail()
        assert "runc:{Type:io.containerd.runc.v2" in log and \
            "Options:map[SystemdCgroup:true]" in log, daemon.log_tail()
        assert daemon.references() == []
        env = {"KUBECRATE_TEST_CONTAINERD_ADDRESS": str(daemon.socket)}
        second = host.installer(*argv, **env)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "loaded 5 image(s)" in second.stdout, second.stdout
        refs = daemon.references()
        assert {"registry.k8s.io/pause:3.9", "registry.k8s.io/kube-proxy:v1.30.14",
                "registry.k8s.io/coredns/coredns:v1.11.3",
                "docker.io/flannel/flannel:v0.25.7"} <= set(refs), refs
        assert not [r for r in refs if "kube-apiserver" in r]  # a worker: its role's only
        third = host.installer(*argv, **env)
        assert third.returncode == 0, third.stdout + third.stderr
        assert "nothing to change" in third.stdout, third.stdout
