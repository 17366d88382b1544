"""The registry each control plane serves in `images.mode: registry` (docs/cluster.md "images:
mode"): distribution's `registry serve` on the storage the images step fed from the archive
(installer/registrystore.py), on this node's address at REGISTRY_NODE_PORT, over TLS with a
certificate the cluster CA signs (SANs: the node's address, the VIP and the endpoint's DNS
name, as containerd reaches it through the load balancer's frontend on REGISTRY_PORT), read
only: nothing is pushed to it.

The files, all under REGISTRY_DIR but the storage:
  config.yml          distribution's configuration (docs/configuration.md of distribution 2.8)
  server.crt/.key     the serving certificate (openssl, installer/bundleserve.issue_certificate)
and the unit UNIT (UNIT_FILE), which runs the bundle's distribution image through containerd
with every path mounted at the same place, so that config.yml names host paths; the lab's
stand-in runs the real `docker-registry` binary on the same config.yml (docs/testing.md).
"""

from typing import Any, Optional, Sequence, Tuple

from installer.bundleserve import issue_certificate
from installer.format.cluster import REGISTRY_IMAGE
from installer.host import Host
from installer.registrystore import REGISTRY_NODE_PORT
from installer.runner import Runner

REGISTRY_DIR = "/etc/kubernetes/kubecrate/registry"
CONFIG = REGISTRY_DIR + "/config.yml"
CERT = REGISTRY_DIR + "/server.crt"
KEY = REGISTRY_DIR + "/server.key"
STORAGE = "/var/lib/kubecrate/registry"
CERT_DAYS = 365  # kubeadm's leaf certificates' lifetime
UNIT = "kubecrate-registry"
UNIT_FILE = "/etc/systemd/system/{}.service".format(UNIT)
# distribution's image, which the bundle must carry for the control planes to serve it (any
# tag: a bundle built with another pin still serves)
IMAGE_REPOSITORY = REGISTRY_IMAGE.rsplit(":", 1)[0]

CONFIG_TEXT = """\
# Written by kubecrate-installer.pyz (images.mode: registry, docs/cluster.md "images: mode"):
# this control plane's registry, serving the bundle's images from {storage}.
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  # fed from the archive only; nothing is pushed or deleted here
  maintenance:
    readonly:
      enabled: true
    uploadpurging:
      enabled: false
http:
  addr: {address}:{port}
  tls:
    certificate: {cert}
    key: {key}
  headers:
    X-Content-Type-Options: [nosniff]
"""

# ExecStartPre: `ctr containers rm` refuses a container whose task still runs (containerd's
# cmd/ctr/commands/containers/containers.go, deleteContainer: "cannot delete a non stopped
# container"); `ctr tasks rm -f` kills such a task with SIGKILL and waits for it to exit before
# deleting it (tasks/delete.go with task_opts.go WithProcessKill), so no separate `tasks kill`
UNIT_TEXT = """\
# Written by kubecrate-installer.pyz install on each control plane (images.mode: registry):
# the bundle's images for every node's containerd, behind the load balancer's frontend.
[Unit]
Description=kubecrate: the cluster's image registry ({address}:{port}, read only)
After=containerd.service network-online.target
Requires=containerd.service

[Service]
# A task left running (containerd restarted, or this unit killed, while the shim kept it)
# keeps serving the old certificate, config and image, and makes `containers rm` refuse and
# `ctr run` fail with "already exists": kill it and delete it first. Each may find nothing.
ExecStartPre=-/usr/bin/ctr -n k8s.io tasks rm -f {unit}
ExecStartPre=-/usr/bin/ctr -n k8s.io containers rm {unit}
ExecStart=/usr/bin/ctr -n k8s.io run --rm --net-host {mounts} {image} {unit} registry serve {config}
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
"""


def config_yml(address: str, storage: str = STORAGE, cert: str = CERT, key: str = KEY,
               port: int = REGISTRY_NODE_PORT) -> str:
    """distribution's config.yml for the registry on `address`:`port` (host paths)."""
    return CONFIG_TEXT.format(address=address, port=port, storage=storage, cert=cert, key=key)


def unit_text(address: str, image: str) -> str:
    """The unit running `image` (distribution's) on this node's config.yml; every path is
    mounted where config.yml names it, the storage read only."""
    mounts = " ".join("--mount type=bind,src={0},dst={0},options=rbind:{1}".format(path, mode)
                      for path, mode in ((STORAGE, "ro"), (REGISTRY_DIR, "ro")))
    return UNIT_TEXT.format(address=address, port=REGISTRY_NODE_PORT, unit=UNIT, mounts=mounts,
                            image=image, config=CONFIG)


def registry_image(references: Sequence[str]) -> Optional[str]:
    """The distribution image among the bundle's `references`, or None."""
    for reference in references:
        if reference.split("@", 1)[0].rsplit(":", 1)[0] == IMAGE_REPOSITORY:
            return reference
    return None


def cert_names(vip: Optional[str], dns_name: Optional[str]) -> Sequence[str]:
    """The names besides the node's address the serving certificate carries."""
    return [name for name in (vip, dns_name) if name]


def issue(host: Host, runner: Runner, address: str, endpoint: Any) -> Tuple[str, str]:
    """Issue the serving certificate for `address` and the cluster `endpoint`'s VIP and DNS
    name (CERT, KEY), signed by the cluster CA; the unit serves it once restarted."""
    return issue_certificate(host, runner, address, REGISTRY_DIR,
                             cert_names(endpoint.vip, endpoint.dns_name), common_name=UNIT,
                             days=CERT_DAYS)
