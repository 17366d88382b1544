"""NetworkManager must leave the CNI's devices alone. calico's: cali* (the pods' host-side
veths), vxlan.calico and tunl* (calico "Configure NetworkManager", requirements page).
flannel's: cni0 (the bridge the
flannel CNI plugin makes), flannel.1 (the VXLAN device) and the pods' veth* ends. A
NetworkManager that manages them can take their addresses away or bring them down
(flannel Documentation/troubleshooting.md, "NetworkManager"). The keyfile plugin's
`unmanaged-devices` in a conf.d file says so (NetworkManager.conf(5), [keyfile] section,
device specs `interface-name:`, which accept a `*` glob). The file is written on every node
whether or not NetworkManager is installed (a later install then reads it); when the unit is
active, `systemctl reload NetworkManager` makes it re-read its configuration.
"""

from functools import partial
from typing import List

from installer.steps import Action, Context, calico
from installer.steps.cnichoice import chosen

CONF = "/etc/NetworkManager/conf.d/kubecrate-cni.conf"
UNMANAGED = ("cni0", "flannel.1", "veth*")


def content(cni: str) -> str:
    devices = calico.DEVICES if cni == "calico" else UNMANAGED
    return "# kubecrate: NetworkManager leaves {}'s devices alone\n[keyfile]\n" \
        "unmanaged-devices={}\n".format(cni, ";".join("interface-name:" + d for d in devices))


CONTENT = content("flannel")


def actions(ctx: Context) -> List[Action]:
    text = content(chosen(ctx))
    if ctx.host.needs_write(CONF, text.encode("utf-8")) is None:
        return []
    return [Action("write {} (unmanaged: {})".format(CONF, text.split("=", 1)[1].strip()),
                   partial(_write, ctx, text))]


def _write(ctx: Context, text: str) -> None:
    ctx.host.write(CONF, text)
    if ctx.runner.query(["systemctl", "is-active", "NetworkManager"]).stdout.strip() == "active":
        ctx.runner.run(["systemctl", "reload", "NetworkManager"])
