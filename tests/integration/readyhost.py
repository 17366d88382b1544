"""A host root that the installer's host steps would have left ready for kubeadm, for the tests
that drive the kube stand-ins without running those steps (test_mirrorworld_standins,
test_ha_bootstrap): what kubeadm's preflight and the kubelet stand-in look for, and nothing else.

- the fake kernel (KUBECRATE_PROBE_ROOT): swap off, bridge-nf-call-iptables and ip_forward 1,
  2 CPUs, 3.7 GiB of memory;
- the tools kubeadm wants on PATH (conntrack, ip, iptables, mount, nsenter, ...) under the root,
  as their RPMs install them;
- kubelet.service and its 10-kubeadm.conf drop-in as the binaries step renders them, and
  Docker's daemon.json with the systemd cgroup driver, as the runtime step writes it;
- the images a node loads, in the root's image store of the recording docker
  (scripts/lab/hoststandins.py), which `docker` on the tests' PATH must be.
"""

import os
from pathlib import Path
from typing import Iterable

from lab import hoststandins
from lab.hostruntime import seed_images

from installer.render import render

HOSTSTANDINS = Path(hoststandins.__file__).resolve()
TOOLS = {"/usr/sbin": ("conntrack", "ip", "iptables", "ebtables", "ethtool", "tc"),
         "/usr/bin": ("mount", "nsenter", "socat", "touch")}
KUBEADM_IMAGES = ("kube-apiserver:v1.23.17", "kube-controller-manager:v1.23.17",
                  "kube-scheduler:v1.23.17", "kube-proxy:v1.23.17", "pause:3.6", "etcd:3.5.6-0",
                  "coredns/coredns:v1.8.6")
CONTROL_PLANE_IMAGES = tuple("registry.k8s.io/" + name for name in KUBEADM_IMAGES)
WORKER_IMAGES = tuple("registry.k8s.io/" + name for name in KUBEADM_IMAGES
                      if name.startswith(("kube-proxy", "pause", "coredns")))


def write_kernel(kernel: Path) -> None:
    files = {"proc/swaps": "Filename\tType\tSize\tUsed\tPriority\n",
             "proc/sys/net/bridge/bridge-nf-call-iptables": "1\n",
             "proc/sys/net/ipv4/ip_forward": "1\n",
             "proc/cpuinfo": "processor\t: 0\n\nprocessor\t: 1\n\n",
             "proc/meminfo": "MemTotal:        3880000 kB\n"}
    for rel, text in files.items():
        (kernel / rel).parent.mkdir(parents=True, exist_ok=True)
        (kernel / rel).write_text(text)


def write_root(root: Path, images: Iterable[str] = CONTROL_PLANE_IMAGES) -> None:
    for folder, names in TOOLS.items():
        (root / folder.lstrip("/")).mkdir(parents=True, exist_ok=True)
        for name in names:
            tool = root / folder.lstrip("/") / name
            tool.write_text("#!/bin/sh\n# placeholder: kubeadm's preflight only looks it up\n")
            tool.chmod(0o755)
    units = root / "usr/lib/systemd/system"
    (units / "kubelet.service.d").mkdir(parents=True, exist_ok=True)
    (units / "kubelet.service").write_text(render("kubelet.service.j2"))
    (units / "kubelet.service.d/10-kubeadm.conf").write_text(render("10-kubeadm.conf.j2"))
    (root / "etc/docker").mkdir(parents=True, exist_ok=True)
    (root / "etc/docker/daemon.json").write_text(
        '{"exec-opts": ["native.cgroupdriver=systemd"]}\n')
    seed_images(root, images)


def link_docker(bindir: Path) -> None:
    """The recording docker on a stand-in PATH folder (answers from KUBECRATE_ROOT's store)."""
    HOSTSTANDINS.chmod(0o755)
    for name in ("docker", "ctr", "crictl"):
        if not (bindir / name).exists():
            os.symlink(HOSTSTANDINS, bindir / name)
