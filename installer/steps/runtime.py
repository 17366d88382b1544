"""The container runtime: Docker's daemon.json (systemd cgroup driver, overlay2, log rotation,
as kubernetes.io "Container Runtimes" asks) or containerd's config.toml with SystemdCgroup and
the bundled pause image as sandbox image (with `images.mode: registry`, config_path and a
hosts.toml per registry: installer/registrystore.py); then enabled, and started or restarted
when its config changed."""

import json
from functools import partial
from typing import Any, Dict, List, Tuple

from installer import owned, registrystore
from installer.format import lbspec
from installer.render import render
from installer.steps import Action, ActionStep, Context
from installer.steps.hostprep import _enabled

DOCKER_CONFIG = "/etc/docker/daemon.json"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CRICTL_CONFIG = "/etc/crictl.yaml"
# One endpoint for crictl and the kubelet (kubeadm's criSocket, which kubeadm passes on as the
# kubelet's --container-runtime-endpoint): installer/format/lbspec.py.
CONTAINERD_SOCKET = lbspec.CONTAINERD_SOCKET
# The kubelet's built-in dockershim (1.23, the last release with it) serves CRI here. Without
# /etc/crictl.yaml crictl probes its default endpoints and warns that doing so is deprecated
# (cri-tools cmd/crictl/main.go, defaultRuntimeEndpoints): name the endpoint explicitly.
DOCKERSHIM_ENDPOINT = "unix:///var/run/dockershim.sock"


def docker_daemon_json(ctx: Context) -> str:
    config: Dict[str, Any] = {
        "exec-opts": ["native.cgroupdriver=systemd"],
        "log-driver": "json-file",
        "log-opts": {"max-size": "100m", "max-file": "5"},
        "storage-driver": "overlay2",
    }
    if ctx.cluster.runtime.registry_mirrors:
        config["registry-mirrors"] = list(ctx.cluster.runtime.registry_mirrors)
    if ctx.cluster.runtime.insecure_registries:
        config["insecure-registries"] = list(ctx.cluster.runtime.insecure_registries)
    if ctx.cluster.enforcing:  # label containers container_t (off by default: dockerd(8))
        config["selinux-enabled"] = True
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def containerd_config(ctx: Context) -> str:
    if not ctx.info.pause_image:
        from installer.format.errors import VerificationError

        raise VerificationError("bundle.json names no pause image for containerd's sandbox",
                                hint="the bundle must carry the pause image kubeadm uses")
    mirrors = []
    if ctx.cluster.runtime.registry_mirrors:
        mirrors.append(("docker.io", list(ctx.cluster.runtime.registry_mirrors)))
    return render("containerd-config.toml.j2", pause_image=ctx.info.pause_image,
                  mirrors=mirrors, insecure=list(ctx.cluster.runtime.insecure_registries),
                  enable_selinux=ctx.cluster.enforcing,
                  config_path=registrystore.CERTS_D if registry_mode(ctx) else "")


def registry_mode(ctx: Context) -> bool:
    return ctx.cluster.images_mode == "registry"


def containerd_files(ctx: Context) -> List[Tuple[str, str]]:
    """containerd's config.toml and crictl.yaml; in images.mode registry also the hosts.toml
    of every registry the bundle's images name (installer/registrystore.py)."""
    files = [(CONTAINERD_CONFIG, containerd_config(ctx)),
             (CRICTL_CONFIG, render("crictl.yaml.j2", endpoint=CONTAINERD_SOCKET))]
    if registry_mode(ctx):
        files += registrystore.hosts_files(
            [i.reference for i in ctx.info.images], ctx.cluster.endpoint.host,
            [node.address for node in ctx.cluster.nodes if node.is_control_plane])
    return files


class RuntimeStep(ActionStep):
    name = "runtime"
    title = "Configure, enable and start the container runtime"

    def actions(self, ctx: Context) -> List[Action]:
        found = []
        if ctx.info.runtime == "docker":
            unit, files = "docker", [(DOCKER_CONFIG, docker_daemon_json(ctx))]
            crictl = render("crictl.yaml.j2", endpoint=DOCKERSHIM_ENDPOINT)
            if ctx.host.needs_write(CRICTL_CONFIG, crictl.encode("utf-8")) is not None:
                found.append(Action("write " + CRICTL_CONFIG, partial(
                    ctx.host.write, CRICTL_CONFIG, crictl)))  # crictl only: no restart
        else:
            unit, files = "containerd", containerd_files(ctx)
        stale = [(path, text) for path, text in files
                 if ctx.host.needs_write(path, text.encode("utf-8")) is not None]
        if stale:
            def write_and_restart() -> None:
                for path, text in stale:
                    ctx.host.write(path, text)
                was = ctx.runner.query(["systemctl", "is-active", unit]).stdout.strip()
                ctx.runner.run(["systemctl", "daemon-reload"])
                ctx.runner.run(["systemctl", "restart", unit])
                if was != "active":  # restart started it: kubecrate's to stop on reset
                    owned.note_unit(ctx.host, "runtime", unit, "started")

            found.append(Action("write {} and restart {}".format(
                ", ".join(p for p, _ in stale), unit), write_and_restart))
            if ctx.runner.query(["systemctl", "is-enabled", unit]).stdout.strip() != "enabled":
                found.append(Action("enable " + unit, partial(
                    owned.systemctl, ctx.host, ctx.runner, "runtime", "enable", unit)))
            return found
        return found + _enabled(ctx, unit, start=True, step="runtime")
