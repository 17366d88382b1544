"""NetworkManager must leave flannel's devices alone: cni0 (the bridge the
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

from installer.steps import Action, Context

CONF = "/etc/NetworkManager/conf.d/kubecrate-cni.conf"
UNMANAGED = ("cni0", "flannel.1", "veth*")
CONTENT = "# kubecrate: NetworkManager leaves flannel's devices alone\n[keyfile]\n" \
    "unmanaged-devices=" + ";".join("interface-name:" + d for d in UNMANAGED) + "\n"


def actions(ctx: Context) -> List[Action]:
    if ctx.host.needs_write(CONF, CONTENT.encode("utf-8")) is None:
        return []
    return [Action("write {} (unmanaged: {})".format(CONF, ", ".join(UNMANAGED)),
                   partial(_write, ctx))]


def _write(ctx: Context) -> None:
    ctx.host.write(CONF, CONTENT)
    if ctx.runner.query(["systemctl", "is-active", "NetworkManager"]).stdout.strip() == "active":
        ctx.runner.run(["systemctl", "reload", "NetworkManager"])
