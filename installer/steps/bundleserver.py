"""bundle-server: on the first control-plane node, the kubecrate-bundle-server unit, which
serves the bundle the cluster runs to the nodes that join (installer/bundleserve.py; they
fetch it with `install --join join.yaml` and no --bundle). The unit runs the installer's own
`serve-bundle` from etcdtimer.PROGRAM (a copy of the running .pyz), on this node's address and
bundlefetch.PORT, which the kubeadm step writes into join.yaml as bundle_server.
"""

import logging
import os
import sys
from functools import partial
from typing import List, Optional

from installer import bundlecache, owned
from installer.bundlefetch import PORT
from installer.etcdtimer import PROGRAM, copy_program
from installer.steps import Action, ActionStep, Context
from installer.steps.loadbalancer import is_first

log = logging.getLogger(__name__)

UNIT = "kubecrate-bundle-server"
UNIT_FILE = "/etc/systemd/system/{}.service".format(UNIT)
UNIT_TEXT = """\
# Written by kubecrate-installer.pyz install on the first control-plane node (docs/fleet.md):
# serves the cluster's bundle to joining nodes that hold a valid bootstrap token.
[Unit]
Description=kubecrate: the cluster's bundle for joining nodes (HTTPS, port {port})
After=network-online.target

[Service]
ExecStart={program} serve-bundle -v --root {root} --address {address} --port {port}
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
"""


def running_pyz() -> Optional[str]:
    """The .pyz this process runs from (sys.argv[0]), or None (a checkout, the tests)."""
    invoked = sys.argv[0] if sys.argv else ""
    return os.path.abspath(invoked) if invoked.endswith(".pyz") and os.path.isfile(invoked) \
        else None


def _sha256(path: str) -> Optional[str]:
    try:
        return bundlecache.file_sha256(path)
    except OSError:
        return None


class BundleServerStep(ActionStep):
    name = "bundle-server"
    title = "the bundle server for joining nodes (first control-plane node)"

    def actions(self, ctx: Context) -> List[Action]:
        if not is_first(ctx):
            return []
        program = running_pyz()
        if program is None:
            log.info("no bundle server: this installer does not run from a .pyz; joining "
                        "nodes need --bundle")
            return []
        text = UNIT_TEXT.format(program=PROGRAM, root=ctx.host.root, address=ctx.node.address,
                                port=PORT)
        found = []
        stale = _sha256(program) != _sha256(ctx.host.path(PROGRAM))
        if stale:
            found.append(Action("copy {} to {}".format(program, PROGRAM),
                                partial(_copy, ctx, program)))
        if ctx.host.read_text(UNIT_FILE) != text:
            stale = True
            found.append(Action("write " + UNIT_FILE,
                                partial(ctx.host.write, UNIT_FILE, text)))
        query = ctx.runner.query
        if stale or query(["systemctl", "is-enabled", UNIT]).stdout.strip() != "enabled" or \
                query(["systemctl", "is-active", UNIT]).stdout.strip() != "active":
            found.append(Action("start {} on {}:{}".format(UNIT, ctx.node.address, PORT),
                                partial(_start, ctx)))
        return found


def _copy(ctx: Context, program: str) -> None:
    if not ctx.host.dry_run:
        copy_program(ctx.host, program)


def _start(ctx: Context) -> str:
    owned.restart_unit(ctx.host, ctx.runner, BundleServerStep.name, UNIT)
    return "started {} (https://{}:{}/)".format(UNIT, ctx.node.address, PORT)
