"""kubeadm v1beta3 configuration: loading, the checks kubeadm makes, images, kubelet flags."""

import ipaddress
import re
import sys

import _extetcd
import _kubeadm_schema
import _yaml
from _common import MINOR, TOKEN_RE, VERSION, StandinError, arg_path, read_text

GROUP = "kubeadm.k8s.io"
KNOWN = {
    "InitConfiguration": {"bootstrapTokens", "nodeRegistration", "localAPIEndpoint",
                          "certificateKey", "skipPhases", "patches"},
    "ClusterConfiguration": {"etcd", "networking", "kubernetesVersion", "controlPlaneEndpoint",
                             "apiServer", "controllerManager", "scheduler", "dns",
                             "certificatesDir", "imageRepository", "featureGates",
                             "clusterName"},
    "JoinConfiguration": {"nodeRegistration", "caCertPath", "discovery", "controlPlane",
                          "skipPhases", "patches"},
}
OTHER_KINDS = {("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"),
               ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration")}
# What `kubeadm config images list` prints per minor (cmd/kubeadm/app/images/images.go).
IMAGES = {23: ("3.6", "3.5.6-0", "v1.8.6"), 28: ("3.9", "3.5.15-0", "v1.10.1"),
          30: ("3.9", "3.5.15-0", "v1.11.3"), 31: ("3.10", "3.5.15-0", "v1.11.3"),
          32: ("3.10", "3.5.21-0", "v1.11.3"),
          33: ("3.10", "3.5.24-0", "v1.12.0")}
DEFAULT_REPO = "registry.k8s.io"
DOCKERSHIM = "/var/run/dockershim.sock"
CONTAINERD = "unix:///var/run/containerd/containerd.sock"


class ConfigError(StandinError):
    """Aggregated field errors, printed one per line as kubeadm's validation does."""


def load(path: str) -> dict:
    """{kind: document} of a multi-document kubeadm config (YAML subset or JSON)."""
    try:
        docs = _yaml.load_all(read_text(arg_path(path)))
    except OSError as exc:
        raise StandinError("unable to read config from %r: %s" % (path, exc))
    except _yaml.YAMLError as exc:
        raise StandinError("error converting YAML to JSON: yaml: %s (%s)" % (exc, path))
    out = {}
    for doc in docs:
        if not isinstance(doc, dict):
            raise StandinError("invalid configuration document in %s: %r" % (path, doc))
        api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        if api.startswith(GROUP + "/") and kind in KNOWN:
            _check_api(api, kind)
        elif (api, kind) not in OTHER_KINDS:
            sys.stderr.write("[config] WARNING: Ignored YAML document with GroupVersionKind "
                             "%s, Kind=%s\n" % (api, kind))
            continue
        # kubeadm 1.23 only warns here (strict.go VerifyUnmarshalStrict); the stand-in refuses
        # so that no rendered config carries a field kubeadm drops (_kubeadm_schema.py).
        unknown = _kubeadm_schema.unknown_fields(kind, doc, api)
        if unknown:
            raise StandinError('error unmarshaling configuration %s/%s from %s: strict decoding '
                               'error: %s' % (api, kind, path, ", ".join(
                                   'unknown field "%s"' % f for f in unknown)))
        if kind in out:
            raise StandinError("duplicate %s in %s: kubeadm reads one of each kind"
                               % (kind, path))
        out[kind] = doc
    return out


def _check_api(api: str, kind: str) -> None:
    version = api.split("/", 1)[1]
    if version in ("v1alpha1", "v1alpha2", "v1alpha3", "v1beta1") or \
            (version == "v1beta2" and MINOR >= 26):
        raise StandinError(
            'your configuration file uses an old API spec: "%s". Please use kubeadm v1.%d '
            "instead and run 'kubeadm config migrate --old-config old.yaml --new-config "
            "new.yaml', which will write the new, similar spec using a newer API version."
            % (api, MINOR - 1))
    if (version != "v1beta3" or MINOR >= 35) and not (
            version == "v1beta2" or (version == "v1beta4" and MINOR >= 31)):
        # v1beta3 is gone from 1.35 (kubernetes/kubernetes#136016)
        raise StandinError('no kind "%s" is registered for version "%s" in scheme '
                           '"k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/scheme/scheme.go:31"'
                           % (kind, api))


def split_endpoint(value: str, default_port: int):
    """'host[:port]' -> (host, port); raises ValueError on a malformed value."""
    value = str(value)
    m = re.match(r"\A(\[[0-9a-fA-F:]+\]|[^:\[\]]+)(?::(\d{1,5}))?\Z", value)
    if not m:
        raise ValueError(value)
    port = int(m.group(2)) if m.group(2) else default_port
    if not 0 < port < 65536:
        raise ValueError(value)
    return m.group(1).strip("[]"), port


def check_token(token, where: str, errors: list) -> None:
    if not TOKEN_RE.match(str(token)):
        errors.append('%s: Invalid value: "%s": the bootstrap token "%s" was not of the form '
                      r'"\A([a-z0-9]{6})\.([a-z0-9]{16})\z"' % (where, token, token))


def check_certificate_key(key, where: str, errors: list) -> None:
    if key is not None and not isinstance(key, str):
        errors.append("%s: json: cannot unmarshal %s into Go struct field of type string "
                      "(quote the value in YAML)" % (where, type(key).__name__))
    elif key and not re.match(r"\A[0-9a-f]{64}\Z", str(key)):
        errors.append('%s: Invalid value: "%s": the certificate key must be 64 hexadecimal '
                      "characters (a 32-byte AES-256 key); generate one with `kubeadm certs "
                      "certificate-key`" % (where, key))


def validate_init(cfg: dict, upload_certs: bool) -> dict:
    """Check an init config like kubeadm 1.23 does; returns normalised settings."""
    init = cfg.get("InitConfiguration") or {}
    cluster = cfg.get("ClusterConfiguration") or {}
    errors = []
    version = cluster.get("kubernetesVersion")
    if not version:
        raise StandinError(
            'could not fetch a Kubernetes version from the internet: unable to get URL '
            '"https://dl.k8s.io/release/stable-1.txt": Get "https://dl.k8s.io/release/'
            'stable-1.txt": dial tcp: lookup dl.k8s.io: no such host\n'
            "(air-gapped: set ClusterConfiguration.kubernetesVersion explicitly)")
    if str(version) != VERSION:
        errors.append('kubernetesVersion: Invalid value: "%s": this kubeadm is %s; the '
                      "stand-in deploys only its own version" % (version, VERSION))
    endpoint = init.get("localAPIEndpoint") or {}
    advertise = str(endpoint.get("advertiseAddress") or "127.0.0.1")
    try:
        ipaddress.ip_address(advertise)
    except ValueError:
        errors.append('localAPIEndpoint.advertiseAddress: Invalid value: "%s": must be a valid '
                      "IP address" % advertise)
    port = endpoint.get("bindPort") or 6443
    if not isinstance(port, int) or not 0 < port < 65536:
        errors.append('localAPIEndpoint.bindPort: Invalid value: "%s": must be a valid port '
                      "number between 1 and 65535" % port)
        port = 6443
    cpe = cluster.get("controlPlaneEndpoint")
    cpe_host, cpe_port = None, port
    if cpe:
        try:
            cpe_host, cpe_port = split_endpoint(cpe, port)
        except ValueError:
            errors.append('controlPlaneEndpoint: Invalid value: "%s": must be an IP address or '
                          "DNS name with an optional port" % cpe)
    elif upload_certs:
        sys.stderr.write("[upload-certs] WARNING: no controlPlaneEndpoint is set; other control "
                         "plane nodes will not be able to join this cluster\n")
    tokens = init.get("bootstrapTokens") or []
    for i, tok in enumerate(tokens):
        if "token" in tok:
            check_token(tok["token"], "bootstrapTokens[%d].token" % i, errors)
    check_certificate_key(init.get("certificateKey"), "certificateKey", errors)
    nodereg = init.get("nodeRegistration") or {}
    networking = cluster.get("networking") or {}
    for field, default in (("serviceSubnet", "10.96.0.0/12"), ("podSubnet", None)):
        value = networking.get(field) or default
        if value:
            try:
                ipaddress.ip_network(str(value))
            except ValueError:
                errors.append('networking.%s: Invalid value: "%s": couldn\'t parse subnet'
                              % (field, value))
    errors += _extetcd.etcd_errors(cluster)
    if errors:
        raise ConfigError("\n".join(errors))
    return {
        "version": VERSION,
        "advertise": advertise,
        "port": port,
        "endpoint": "%s:%d" % (cpe_host, cpe_port) if cpe_host else "%s:%d" % (advertise, port),
        "stable_endpoint": bool(cpe_host),
        "cpe_host": cpe_host,
        "tokens": tokens,
        "certificate_key": init.get("certificateKey"),
        "nodereg": nodereg,
        "repo": cluster.get("imageRepository") or DEFAULT_REPO,
        "cluster": cluster,
        "service_subnet": str(networking.get("serviceSubnet") or "10.96.0.0/12"),
        "kubelet": cfg.get("KubeletConfiguration") or {},
        "patches": (init.get("patches") or {}).get("directory"),
    }


def images(version: str, repo=None) -> list:
    """The list `kubeadm config images list` prints (cmd/kubeadm/app/images/images.go)."""
    m = re.match(r"\Av?1\.(\d+)\.(\d+)\Z", str(version))
    if not m:
        raise StandinError('couldn\'t parse Kubernetes version "%s"' % version)
    minor = int(m.group(1))
    if minor not in IMAGES:
        raise StandinError("the stand-in knows the images of v1.%s only, "
                           'not "%s"' % (", v1.".join(map(str, sorted(IMAGES))), version))
    pause, etcd, coredns = IMAGES[minor]
    tag = "v" + str(version).lstrip("v")
    custom = repo and repo != DEFAULT_REPO
    repo = repo or DEFAULT_REPO
    out = ["%s/%s:%s" % (repo, name, tag) for name in
           ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")]
    out += ["%s/pause:%s" % (repo, pause), "%s/etcd:%s" % (repo, etcd)]
    # The coredns/ sub-path is added only for the default repository (images.go).
    out.append("%s/%s:%s" % (repo, "coredns" if custom else "coredns/coredns", coredns))
    return out


def cri_socket(nodereg: dict) -> str:
    if nodereg.get("criSocket"):
        return str(nodereg["criSocket"])
    return DOCKERSHIM if MINOR <= 23 else CONTAINERD


def extra_args(value) -> dict:
    """name -> value of an extraArgs field: a map in v1beta3, a list of {name, value} in
    v1beta4 (where a repeated name is allowed; the last one wins here)."""
    if isinstance(value, list):
        return {str(a.get("name")): a.get("value") for a in value if isinstance(a, dict)}
    return dict(value or {})


def kubelet_flags(nodereg: dict, repo: str) -> str:
    """KUBELET_KUBEADM_ARGS as kubeadm writes it (1.23's
    cmd/kubeadm/app/phases/kubelet/flags.go)."""
    sock = cri_socket(nodereg)
    pause = images(VERSION, repo)[4]
    if MINOR <= 23 and sock == DOCKERSHIM:
        flags = ["--network-plugin=cni", "--pod-infra-container-image=" + pause]
    elif MINOR <= 23:
        flags = ["--container-runtime=remote", "--container-runtime-endpoint=" + sock]
    else:
        flags = ["--container-runtime-endpoint=" + sock, "--pod-infra-container-image=" + pause]
    for key, value in sorted(extra_args(nodereg.get("kubeletExtraArgs")).items()):
        flags.append("--%s=%s" % (key, value))
    return 'KUBELET_KUBEADM_ARGS="%s"\n' % " ".join(flags)


def kubelet_config(kubelet_doc: dict) -> str:
    driver = kubelet_doc.get("cgroupDriver") or "systemd"
    return ("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
            "authentication:\n  x509:\n    clientCAFile: /etc/kubernetes/pki/ca.crt\n"
            "cgroupDriver: %s\nclusterDNS:\n- 10.96.0.10\nclusterDomain: cluster.local\n"
            "staticPodPath: /etc/kubernetes/manifests\n" % driver)
