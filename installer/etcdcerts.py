"""etcd-certs.json: the etcd CA pair and the apiserver-etcd-client pair of an etcd.external
cluster, written by the first etcd host's install and given to the other etcd hosts and to the
first control plane with `install --etcd-certs FILE`.

kubeadm's "Set up a High Availability etcd cluster with kubeadm" makes the etcd CA on one host
and copies files from there with scp; this file is that copy, in one piece. It is secret (mode
0600 from its first byte, like join.yaml): the CA key signs certificates every etcd member
trusts. It names its cluster (cluster_name and the etcd.external hosts of cluster.yaml), so
that a file of another cluster is refused before anything is written.
"""

import json
import logging
import re
from typing import Any, Dict, List, NamedTuple, Sequence

from installer import joinfile
from installer.atomic import replace_file
from installer.format import yamldoc
from installer.format.cluster import Cluster
from installer.format.errors import PreconditionError

log = logging.getLogger(__name__)
FORMAT = "kubecrate-etcd-certs/1"
FILE = "/etc/kubernetes/kubecrate/etcd-certs.json"  # where the first etcd host writes it
PKI = "/etc/kubernetes/pki"
# file key -> where kubeadm keeps it under PKI (kubeadm's constants.go: EtcdCACertName, ...)
CA_FILES = (("ca_crt", "etcd/ca.crt"), ("ca_key", "etcd/ca.key"))
CLIENT_FILES = (("client_crt", "apiserver-etcd-client.crt"),
                ("client_key", "apiserver-etcd-client.key"))
KEYS = ("format", "cluster_name", "etcd_hosts") + tuple(k for k, _ in CA_FILES + CLIENT_FILES)
PEM_RE = re.compile(r"\A-----BEGIN [A-Z ]+-----\n[A-Za-z0-9+/=\n]+-----END [A-Z ]+-----\n?\Z")
OPTION = "--etcd-certs"


class EtcdCerts(NamedTuple):
    cluster_name: str
    etcd_hosts: List[str]  # "name=address" of cluster.yaml's etcd.external, in order
    files: Dict[str, str]  # KEYS' PEM members -> their text

    def pairs(self, etcd_host: bool) -> List[Any]:
        """(path under the host's PKI, PEM text, mode) to write: on an etcd host the etcd CA
        pair (kubeadm signs the member's certificates with it); on the first control plane
        the CA certificate and the client pair, not the CA key (kubeadm's external etcd
        needs only those: its preflight's ExternalEtcdClientCertificates)."""
        wanted = list(CA_FILES) if etcd_host else [CA_FILES[0]] + list(CLIENT_FILES)
        return [(PKI + "/" + path, self.files[key], 0o600 if key.endswith("_key") else 0o644)
                for key, path in wanted]


def identity(cluster: Cluster) -> List[str]:
    return ["{}={}".format(h.name, h.address) for h in cluster.etcd_hosts]


def where_from(cluster: Cluster) -> str:
    """Where the file comes from, for the hints."""
    first = cluster.etcd_hosts[0]
    return "the first etcd host {} ({}) writes {} when kubecrate installs it; copy it here " \
        "(mode 0600) and pass {} FILE".format(first.name, first.address, FILE, OPTION)


def dump(certs: EtcdCerts) -> str:
    document = dict(certs.files, format=FORMAT, cluster_name=certs.cluster_name,
                    etcd_hosts=list(certs.etcd_hosts))
    return json.dumps(document, indent=1, sort_keys=True) + "\n"


def parse(text: str, source: str, cluster: Cluster) -> EtcdCerts:
    """The file's contents, checked against `cluster`: PreconditionError (exit 4) naming
    `source` when it is malformed or belongs to another cluster."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not a {} document".format(FORMAT))
    except ValueError as err:
        raise PreconditionError("{}: not an etcd certificates file: {}".format(source, err),
                                hint=where_from(cluster))
    unknown = sorted(set(data) - set(KEYS))
    missing = [k for k in KEYS if not isinstance(data.get(k), (str, list))]
    bad = [k for k, _ in CA_FILES + CLIENT_FILES
           if k not in missing and not PEM_RE.match(str(data[k]))]
    if unknown or missing or bad:
        raise PreconditionError("{}: {}".format(source, "; ".join(
            ["unknown key " + k for k in unknown] + ["missing " + k for k in missing]
            + [k + " is not PEM" for k in bad])), hint=where_from(cluster))
    wanted = identity(cluster)
    if data["cluster_name"] != cluster.name or list(data["etcd_hosts"]) != wanted:
        raise PreconditionError(
            "{} is of another cluster: {} with etcd hosts {}, but {} is {} with {}".format(
                source, data["cluster_name"], ", ".join(data["etcd_hosts"]), cluster.source,
                cluster.name, ", ".join(wanted)),
            hint="use the file of this cluster's first etcd host: " + where_from(cluster))
    return EtcdCerts(data["cluster_name"], list(data["etcd_hosts"]),
                     {k: str(data[k]) for k, _ in CA_FILES + CLIENT_FILES})


def load(path: str, cluster: Cluster) -> EtcdCerts:
    """Read and check `path` (install --etcd-certs); warns when group or others can read it."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            text = handle.read(yamldoc.MAX_BYTES + 1)
    except OSError as err:
        raise PreconditionError("cannot read {} ({} FILE): {}".format(path, OPTION,
                                                                      err.strerror),
                                hint=where_from(cluster))
    warning = joinfile.exposure(path, "the etcd CA key in it signs certificates every etcd "
                                      "member trusts")
    if warning:
        log.warning("%s", warning)
    return parse(text, path, cluster)


def write(path: str, certs: EtcdCerts) -> None:
    """The file at a path of the caller, atomically, mode 0600 from the first byte."""
    text = dump(certs).encode("utf-8")
    replace_file(path, lambda handle: handle.write(text), joinfile.FILE_MODE)


def of_pki(read: Any, cluster: Cluster) -> EtcdCerts:
    """The file's contents from this host's PKI (`read(host_path)` -> text or None)."""
    files = {key: read(PKI + "/" + path) for key, path in CA_FILES + CLIENT_FILES}
    return EtcdCerts(cluster.name, identity(cluster), {k: v or "" for k, v in files.items()})


def conflicts(read: Any, certs: EtcdCerts, paths: Sequence[str] = ("etcd/ca.crt",)) -> List[str]:
    """The files of this host's PKI (`read(host_path)`) that differ from the file's: a host
    of another etcd CA, which the file must not overwrite."""
    found = []
    by_path = {path: key for key, path in CA_FILES + CLIENT_FILES}
    for path in paths:
        current = read(PKI + "/" + path)
        if current is not None and current != certs.files[by_path[path]]:
            found.append(PKI + "/" + path)
    return found
