"""The serving certificates of what kubecrate itself runs on a control plane, beside kubeadm's
(installer/certs.py): the registry's (images.mode registry, installer/registryserve.py; one
year, issued by the registry step) and the bundle server's (first control plane,
installer/bundleserve.py; 30 days, issued by the server at every start and again after a
week of serving). Both are signed by the cluster CA.

`status` lists them with the days left. `renew-certs` issues the registry's again and
restarts kubecrate-registry so that it serves it, and restarts kubecrate-bundle-server,
which issues its own at start.
"""

import datetime
from typing import List, NamedTuple

from installer import bundleserve, registryserve
from installer.certs import WARN_DAYS, Expiry, days_left, not_after
from installer.format.cluster import Cluster
from installer.host import Host
from installer.runner import Runner
from installer.steps import bundleserver


class Served(NamedTuple):
    name: str  # the unit that serves it
    cert: str
    unit_file: str
    warn_days: int  # the bundle server's is always issued again before it serves: 0


SERVED = (Served(registryserve.UNIT, registryserve.CERT, registryserve.UNIT_FILE, WARN_DAYS),
          Served(bundleserver.UNIT, bundleserve.SERVER_DIR + "/server.crt",
                 bundleserver.UNIT_FILE, 0))


def expiries(host: Host, runner: Runner, now: datetime.datetime) -> List[Expiry]:
    """The serving certificates this node has, as certs.expiries lists kubeadm's."""
    found = []
    for served in SERVED:
        moment = not_after(runner, path=host.path(served.cert)) \
            if host.exists(served.cert) else None
        if moment is not None:
            found.append(Expiry(served.name, served.cert, False, moment,
                                days_left(moment, now), served.warn_days))
    return found


def renew(host: Host, runner: Runner, cluster: Cluster, address: str) -> List[str]:
    """Issue the registry's certificate again and restart the units that serve one, on a
    node that runs them (their unit files are there); what was done, or would be."""
    changes = []
    registry, bundle = SERVED
    if host.exists(registry.unit_file):
        if not host.dry_run:
            registryserve.issue(host, runner, address, cluster.endpoint)
        changes.append("issued {} again for {}".format(registry.cert, address))
    for served in SERVED:
        if host.exists(served.unit_file):
            runner.run(["systemctl", "restart", served.name], timeout=60,
                       hint="see `systemctl status {0}` and `journalctl -u {0}`".format(
                           served.name))
            changes.append("restarted {}{}".format(served.name, (
                " (it issues its certificate at start)" if served is bundle else "")))
    return changes
