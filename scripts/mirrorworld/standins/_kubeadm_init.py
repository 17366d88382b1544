"""`kubeadm init` and `kubeadm join` of the stand-in: files under the root, the apiserver API."""

import ipaddress
import json
import os
import re
import secrets
import socket
import string

import _etcdpod
import _extetcd
import _kubeadm_config as config
import _kubeadm_preflight as pf
import _nodenet
import _pki
import _yaml
from _common import (
    MINOR,
    TOKEN_RE,
    VERSION,
    StandinError,
    arg_path,
    free_port,
    now,
    parse_duration,
    read_text,
    restart_kubelet,
    rfc3339,
    rooted,
    timeout,
    wait_healthy,
    write_file,
)

MANIFESTS = "/etc/kubernetes/manifests"
ADMIN_CONF = "/etc/kubernetes/admin.conf"
CERT_TTL = 2 * 3600  # DefaultCertTokenDuration
TOKEN_TTL = 24 * 3600  # DefaultTokenDuration
GROUP = "system:bootstrappers:kubeadm:default-node-token"


class PhaseError(StandinError):
    def __init__(self, phase: str, message: str):
        super().__init__("error execution phase %s: %s" % (phase, message))


def preflight(errors: list, ignored, warnings=()) -> None:
    """Print warnings for ignored checks; raise kubeadm's aggregated error for the rest."""
    fatal = []
    for name, message in warnings:
        print("\t[WARNING %s]: %s" % (name, message))
    for name, message in errors:
        if "all" in ignored or name.lower() in ignored:
            print("\t[WARNING %s]: %s" % (name, message))
        else:
            fatal.append("\t[ERROR %s]: %s" % (name, message))
    if fatal:
        raise PhaseError("preflight", "[preflight] Some fatal errors occurred:\n%s\n[preflight] "
                         "If you know what you are doing, you can make a check non-fatal with "
                         "`--ignore-preflight-errors=...`" % "\n".join(fatal))


def new_token() -> str:
    alphabet = string.ascii_lowercase + string.digits
    pick = lambda n: "".join(secrets.choice(alphabet) for _ in range(n))  # noqa: E731
    return pick(6) + "." + pick(16)


def node_name(nodereg: dict) -> str:
    return str(nodereg.get("name") or socket.gethostname()).lower()


class Admin:
    """The apiserver API as the admin.conf user."""

    def __init__(self, path: str = ADMIN_CONF):
        self.kc = _pki.read_kubeconfig(arg_path(path))

    def call(self, method, path, body=None, ok=(200, 201)):
        from _common import request

        try:
            resp = request(self.kc["server"], method, path, body, ca_pem=self.kc["ca"],
                           client=(self.kc["cert"], self.kc["key"]))
        except OSError as exc:
            raise StandinError("unable to reach the API server at %s: %s"
                               % (self.kc["server"], exc))
        if resp.status not in ok:
            raise StandinError("%s %s: %s" % (method, path, resp.message()))
        return resp.json()


def create_token(api: Admin, token: str, ttl, description: str = "") -> float:
    """Store a bootstrap token secret; returns its expiry (0 = never)."""
    tid, secret = TOKEN_RE.match(token).groups()
    seconds = parse_duration(ttl) if ttl is not None else TOKEN_TTL
    data = {"token-id": tid, "token-secret": secret, "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true", "auth-extra-groups": GROUP,
            "description": description}
    expires = now() + seconds if seconds else 0.0
    if expires:
        data["expiration"] = rfc3339(expires)
    body = {"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": "bootstrap-token-" + tid, "namespace": "kube-system"},
            "stringData": data}
    api.call("PUT", "/api/v1/namespaces/kube-system/secrets/bootstrap-token-" + tid, body)
    return expires


def upload_certs(api: Admin, key: str, print_key: bool = True, cluster=None) -> None:
    print('[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the '
          '"kube-system" Namespace')
    paths = {n: _pki.pki_path(n) for n in _pki.SHARED_CERTS}
    if _extetcd.external(cluster or {}):  # the etcd client files instead of the etcd CA
        paths = {n: p for n, p in paths.items() if not n.startswith("etcd/")}
        paths.update({n: rooted(p) for n, p in _extetcd.transferred(cluster).items()})
    body = {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "kubeadm-certs", "namespace": "kube-system"},
            "stringData": {"expiration": rfc3339(now() + CERT_TTL)},
            "data": _pki.encrypt_certs(key, paths)}
    api.call("PUT", "/api/v1/namespaces/kube-system/secrets/kubeadm-certs", body)
    if print_key:  # phases/init/uploadcerts.go: unless --skip-certificate-key-print
        print("[upload-certs] Using certificate key:\n" + key)


def system_info() -> dict:
    """What the kubelet reports of this machine in status.nodeInfo (k8s.io/api core/v1
    types.go NodeSystemInfo: machineID "for unique machine identification in the cluster",
    systemUUID): kubernetes pkg/kubelet/nodestatus/setters.go MachineInfo copies them from
    cAdvisor, whose machine/info.go reads /etc/machine-id (then /var/lib/dbus/machine-id)
    and /sys/class/dmi/id/product_uuid. Here the machine-id is the host root's, the product
    UUID the fake kernel's ($KUBECRATE_PROBE_ROOT, as the installer's probes read it); an
    unreadable file gives "", as cAdvisor does."""
    machine_id = ""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        machine_id = _read_stripped(rooted(path))
        if machine_id:
            break
    probe = os.environ.get("KUBECRATE_PROBE_ROOT") or "/"
    uuid = _read_stripped(os.path.join(probe, "sys/class/dmi/id/product_uuid"))
    return {"machineID": machine_id, "systemUUID": uuid}


def _read_stripped(path) -> str:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def node_object(name, address, control_plane, cri, endpoint=None) -> dict:
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    taints = []
    if control_plane:
        labels["node-role.kubernetes.io/control-plane"] = ""
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
        if MINOR <= 23:
            labels["node-role.kubernetes.io/master"] = ""
            taints.append({"key": "node-role.kubernetes.io/master", "effect": "NoSchedule"})
        else:
            taints.append({"key": "node-role.kubernetes.io/control-plane",
                           "effect": "NoSchedule"})
    annotations = {"kubeadm.alpha.kubernetes.io/cri-socket": cri}
    annotations.update(_nodenet.annotation(address))  # the node's network, for _podnet.py
    if endpoint:
        annotations["kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"] = endpoint
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": {"taints": taints},
            "status": {"addresses": [{"type": "InternalIP", "address": address},
                                     {"type": "Hostname", "address": name}],
                       "nodeInfo": dict(system_info(), kubeletVersion=VERSION)}}


PATCH_FILE = re.compile(r"(etcd|kube-apiserver|kube-controller-manager|kube-scheduler|"
                        r"kubeletconfiguration)([^+.]*)(?:\+(strategic|merge|json))?"
                        r"\.(yaml|json)\Z")


def _merge(base, patch):
    """A strategic merge for the shapes a static pod has: maps merge key by key, the lists of
    named items (containers, volumes) merge by name, other lists are replaced, null deletes
    (k8s.io/apimachinery strategicpatch, patchMergeKey "name")."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = _merge(base.get(key), value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(
            isinstance(i, dict) and "name" in i for i in base + patch):
        out = list(base)
        for item in patch:
            at = next((n for n, old in enumerate(out) if old["name"] == item["name"]), None)
            if at is None:
                out.append(item)
            else:
                out[at] = _merge(out[at], item)
        return out
    return patch


def apply_patches(manifest: str, target: str, patches_dir) -> str:
    """`patches.directory` (kubeadm v1beta3): files target[suffix][+patchtype].{yaml,json},
    applied in name order to the target's static pod (cmd/kubeadm/app/util/patches). The
    patched pod is written as JSON (which is YAML: the kubelet stand-in reads both)."""
    if not patches_dir:
        return manifest
    folder = rooted(patches_dir)
    if not os.path.isdir(folder):
        raise StandinError("could not list patch files for path \"%s\": lstat %s: no such file or "
                           "directory" % (patches_dir, patches_dir))
    pod, patched = _yaml.load_all(manifest)[0], False
    for entry in sorted(os.listdir(folder)):
        match = PATCH_FILE.match(entry)
        if not match or match.group(1) != target:
            continue
        kind = match.group(3) or "strategic"
        if kind == "json":
            raise StandinError("%s: JSON patches are not modelled by the stand-in" % entry)
        for patch in _yaml.load_all(read_text(os.path.join(folder, entry))):
            pod = _merge(pod, patch)
        patched = True
        print('[patches] Applied patch of type "application/%s-merge-patch+json" to target '
              '"%s"' % (kind, target))
    return json.dumps(pod, indent=1) + "\n" if patched else manifest


def write_control_plane(name, advertise, port, cpe_host, cluster, repo, service_subnet,
                        patches_dir=None) -> None:
    """Leaf certificates, kubeconfigs and static-pod manifests of one control-plane node."""
    service_ip = str(next(ipaddress.ip_network(service_subnet).hosts()))
    sans = [name, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local", service_ip, advertise]
    sans += [cpe_host] if cpe_host else []
    sans += [str(s) for s in (cluster.get("apiServer") or {}).get("certSANs") or []]
    sans = list(dict.fromkeys(sans))
    print("[certs] apiserver serving cert is signed for DNS names and IPs %s" % sans)
    _pki.write_pair("apiserver", _pki.make_cert("ca", "kube-apiserver", sans=sans, server=True))
    # Signed by the cluster CA: the apiserver stand-ins replicate state with it (docs/testing.md).
    _pki.write_pair("apiserver-kubelet-client", _pki.make_cert(
        "ca", "kube-apiserver-kubelet-client", "system:masters", client=True))
    _pki.write_pair("front-proxy-client", _pki.make_cert(
        "front-proxy-ca", "front-proxy-client", client=True))
    external = _extetcd.external(cluster)
    if external:
        print("[certs] External etcd mode: Skipping etcd/server, etcd/peer, "
              "etcd/healthcheck-client and apiserver-etcd-client certificate generation")
    else:
        # The rest of kubeadm's list for stacked etcd (phases/certs/certlist.go): the
        # apiserver-etcd-client pair is the apiserver stand-in's where a real etcd runs.
        etcd_sans = [name, "localhost", advertise, "127.0.0.1", "::1"]
        _pki.write_pair("apiserver-etcd-client", _pki.make_cert(
            "etcd/ca", "kube-apiserver-etcd-client", "system:masters", client=True))
        for leaf in ("etcd/server", "etcd/peer"):
            _pki.write_pair(leaf, _pki.make_cert("etcd/ca", name, sans=etcd_sans, server=True,
                                                 client=True))
        _pki.write_pair("etcd/healthcheck-client", _pki.make_cert(
            "etcd/ca", "kube-etcd-healthcheck-client", client=True))
    ca = read_text(_pki.pki_path("ca.crt"))
    server = "https://%s:%d" % (cpe_host, _cpe_port(cluster, port)) if cpe_host else \
        "https://%s:%d" % (advertise, port)
    admin = _pki.make_cert("ca", "kubernetes-admin", "system:masters", client=True)
    for conf, user in (("admin.conf", "kubernetes-admin"),
                       ("controller-manager.conf", "system:kube-controller-manager"),
                       ("scheduler.conf", "system:kube-scheduler")):
        print('[kubeconfig] Writing "%s" kubeconfig file' % conf)
        write_file(rooted("/etc/kubernetes/" + conf), _pki.kubeconfig(server, ca, user, admin),
                   0o600)
    images = config.images(VERSION, repo)
    extra = config.extra_args((cluster.get("apiServer") or {}).get("extraArgs"))
    args = {"advertise-address": advertise, "secure-port": port,
            "client-ca-file": "/etc/kubernetes/pki/ca.crt",
            "tls-cert-file": "/etc/kubernetes/pki/apiserver.crt",
            "tls-private-key-file": "/etc/kubernetes/pki/apiserver.key",
            "service-cluster-ip-range": service_subnet}
    args.update(_etcdpod.apiserver_flags(cluster))
    args.update(extra)
    print('[control-plane] Using manifest folder "%s"' % MANIFESTS)
    for component, image in (("kube-apiserver", images[0]),
                             ("kube-controller-manager", images[1]),
                             ("kube-scheduler", images[2]), ("etcd", images[5])):
        if component == "etcd" and external:  # no local etcd (phases/etcd: external skips)
            continue
        if component == "etcd":  # kubeadm's own flags (_etcdpod.py): a real etcd may run it.
            # etcd.yaml goes through the same patches folder as the other static pods
            # (cmd/kubeadm/app/phases/etcd/local.go, prepareAndWriteEtcdStaticPod: PatchStaticPod).
            print('[etcd] Creating static Pod manifest for local etcd in "%s"' % MANIFESTS)
            write_file(rooted(MANIFESTS + "/etcd.yaml"), apply_patches(_etcdpod.manifest(
                image, _etcdpod.command(name, advertise, "%s=https://%s:2380"
                                        % (name, advertise))), "etcd", patches_dir), 0o600)
            continue
        print('[control-plane] Creating static Pod manifest for "%s"' % component)
        flags = args if component == "kube-apiserver" else {}
        command = "".join("    - --%s=%s\n" % kv for kv in sorted(flags.items()))
        write_file(rooted("%s/%s.yaml" % (MANIFESTS, component)), apply_patches(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: kube-system\n"
            "  labels:\n    component: %s\n    tier: control-plane\nspec:\n  hostNetwork: true\n"
            "  priorityClassName: system-node-critical\n  containers:\n  - name: %s\n"
            "    image: %s\n    imagePullPolicy: IfNotPresent\n    command:\n    - %s\n%s"
            % (component, component, component, image, component, command),
            component, patches_dir), 0o600)


def _cpe_port(cluster: dict, port: int) -> int:
    return config.split_endpoint(cluster["controlPlaneEndpoint"], port)[1]


def write_kubelet(nodereg, repo, kubelet_doc, kubelet_conf: str) -> None:
    print('[kubelet-start] Writing kubelet environment file with flags to file '
          '"/var/lib/kubelet/kubeadm-flags.env"')
    write_file(rooted("/var/lib/kubelet/kubeadm-flags.env"), config.kubelet_flags(nodereg, repo))
    print('[kubelet-start] Writing kubelet configuration to file "/var/lib/kubelet/config.yaml"')
    write_file(rooted("/var/lib/kubelet/config.yaml"), config.kubelet_config(kubelet_doc))
    write_file(rooted("/etc/kubernetes/kubelet.conf"), kubelet_conf, 0o600)
    print("[kubelet-start] Starting the kubelet")
    restart_kubelet()


def init(config_path: str, upload: bool, ignored) -> str:
    """Bring up the first control-plane node; returns the text kubeadm prints at the end."""
    cfg = config.validate_init(config.load(config_path), upload)
    name, nodereg = node_name(cfg["nodereg"]), cfg["nodereg"]
    ignored = set(ignored) | {str(x).lower() for x in nodereg.get("ignorePreflightErrors") or []}
    print("[init] Using Kubernetes version: " + VERSION)
    print("[preflight] Running pre-flight checks")
    external = _extetcd.external(cfg["cluster"])
    errors = pf.control_plane(cfg["advertise"], local_etcd=not external)
    if not free_port(cfg["advertise"], cfg["port"]):
        errors.append(("Port-%d" % cfg["port"], "Port %d is in use" % cfg["port"]))
    for comp in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"):
        path = "%s/%s.yaml" % (MANIFESTS, comp)
        if os.path.exists(rooted(path)):
            errors.append(("FileAvailable-" + path.replace("/", "-"), path + " already exists"))
    if external:
        errors += _extetcd.missing_files(cfg["cluster"], rooted)
    elif os.path.isdir(rooted("/var/lib/etcd")) and os.listdir(rooted("/var/lib/etcd")):
        errors.append(("DirAvailable--var-lib-etcd", "/var/lib/etcd is not empty"))
    socket_ = config.cri_socket(nodereg)
    common, warnings = pf.common(socket_, cfg["advertise"])
    errors += common
    preflight(errors, ignored, warnings)
    print("[preflight] Pulling images required for setting up a Kubernetes cluster")
    preflight(pf.image_pull(config.images(VERSION, cfg["repo"]),
                            str(nodereg.get("imagePullPolicy") or "IfNotPresent"), socket_),
              ignored)
    print('[certs] Using certificateDir folder "/etc/kubernetes/pki"')
    for ca, cn in (("ca", "kubernetes"), ("front-proxy-ca", "front-proxy-ca"),
                   ("etcd/ca", "etcd-ca")):
        if ca == "etcd/ca" and external:
            print("[certs] External etcd mode: Skipping etcd/ca certificate authority generation")
            continue
        print('[certs] Generating "%s" certificate and key' % ca)
        _pki.make_ca(ca, cn)
    _pki.make_sa_key()
    ca_pem = read_text(_pki.pki_path("ca.crt"))
    node_pair = _pki.make_cert("ca", "system:node:" + name, "system:nodes", client=True)
    kubelet_conf = _pki.kubeconfig("https://%s" % cfg["endpoint"], ca_pem,
                                   "system:node:" + name, node_pair)
    write_kubelet(nodereg, cfg["repo"], cfg["kubelet"], kubelet_conf)
    write_control_plane(name, cfg["advertise"], cfg["port"], cfg["cpe_host"], cfg["cluster"],
                        cfg["repo"], cfg["service_subnet"], cfg["patches"])
    print('[wait-control-plane] Waiting for the kubelet to boot up the control plane as static '
          'Pods from directory "/etc/kubernetes/manifests". This can take up to %ds'
          % timeout())
    try:
        took = wait_healthy("https://" + cfg["endpoint"], ca_pem, watch_pid_name="kubelet")
    except StandinError as exc:
        raise PhaseError("wait-control-plane", str(exc))
    print("[apiclient] All control plane components are healthy after %.6f seconds" % took)
    api = Admin()
    print('[upload-config] Storing the configuration used in ConfigMap "kubeadm-config" in the '
          '"kube-system" Namespace')
    cluster = dict(cfg["cluster"], kubernetesVersion=VERSION)
    api.call("PUT", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config",
             {"metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
              "data": {"ClusterConfiguration": json.dumps(cluster, sort_keys=True)}})
    key = cfg["certificate_key"] or _pki.new_certificate_key()
    if upload:
        upload_certs(api, key, cluster=cfg["cluster"])
    else:
        print("[upload-certs] Skipping phase. Please see --upload-certs")
    print("[mark-control-plane] Marking the node %s as control-plane" % name)
    endpoint = "%s:%d" % (cfg["advertise"], cfg["port"])
    api.call("POST", "/api/v1/nodes", node_object(name, cfg["advertise"], True,
                                                  config.cri_socket(nodereg), endpoint))
    tokens = cfg["tokens"] or [{"token": new_token()}]
    for tok in tokens:
        tok.setdefault("token", new_token())
        print("[bootstrap-token] Using token: " + tok["token"])
        create_token(api, tok["token"], tok.get("ttl"), str(tok.get("description") or ""))
    print('[bootstrap-token] Creating the "cluster-info" ConfigMap in the "kube-public" '
          "namespace")
    api.call("PUT", "/api/v1/namespaces/kube-public/configmaps/cluster-info",
             {"metadata": {"name": "cluster-info", "namespace": "kube-public"},
              "data": {"kubeconfig": _pki.kubeconfig("https://" + cfg["endpoint"], ca_pem, "")}})
    print("[addons] Applied essential addon: CoreDNS\n[addons] Applied essential addon: "
          "kube-proxy\n")
    return success_text(cfg["endpoint"], tokens[0]["token"], _pki.ca_cert_hash(ca_pem),
                        key if upload and cfg["stable_endpoint"] else None)


def success_text(endpoint, token, ca_hash, key) -> str:
    join = "kubeadm join %s --token %s \\\n\t--discovery-token-ca-cert-hash %s" % (
        endpoint, token, ca_hash)
    text = (
        "Your Kubernetes control-plane has initialized successfully!\n\n"
        "To start using your cluster, you need to run the following as a regular user:\n\n"
        "  mkdir -p $HOME/.kube\n  sudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config\n"
        "  sudo chown $(id -u):$(id -g) $HOME/.kube/config\n\n"
        "Alternatively, if you are the root user, you can run:\n\n"
        "  export KUBECONFIG=/etc/kubernetes/admin.conf\n\n"
        "You should now deploy a pod network to the cluster.\n"
        'Run "kubectl apply -f [podnetwork].yaml" with one of the options listed at:\n'
        "  https://kubernetes.io/docs/concepts/cluster-administration/addons/\n\n")
    if key:
        text += (
            "You can now join any number of the control-plane node running the following "
            "command on each as root:\n\n  %s \\\n\t--control-plane --certificate-key %s\n\n"
            "Please note that the certificate-key gives access to cluster sensitive data, keep "
            "it secret!\nAs a safeguard, uploaded-certs will be deleted in two hours; If "
            'necessary, you can use\n"kubeadm init phase upload-certs --upload-certs" to reload '
            "certs afterward.\n\n" % (join, key))
    return text + ("Then you can join any number of worker nodes by running the following on "
                   "each as root:\n\n%s \n" % join)
