"""`kubeadm join` of the stand-in: token discovery over HTTPS, certificate download, node join."""

import http.client
import json
import os
import re
import ssl
import time

import _etcdpod
import _extetcd
import _kubeadm_config as config
import _kubeadm_init as kinit
import _kubeadm_preflight as pf
import _pki
import _yaml
from _common import (
    StandinError,
    free_port,
    read_text,
    request,
    rooted,
    timeout,
    wait_healthy,
    write_file,
)
from _kubeadm_init import PhaseError

HASH_RE = re.compile(r"\Asha256:[0-9a-f]{64}\Z")


def options(args) -> dict:
    """Join settings from `--config F` (JoinConfiguration) or from the flags."""
    if args.config:
        doc = config.load(args.config).get("JoinConfiguration")
        if doc is None:
            raise StandinError("no JoinConfiguration found in " + args.config)
        disc = (doc.get("discovery") or {}).get("bootstrapToken") or {}
        cp = doc.get("controlPlane")
        local = (cp or {}).get("localAPIEndpoint") or {}
        opts = {"endpoint": disc.get("apiServerEndpoint"), "token": disc.get("token"),
                "hashes": disc.get("caCertHashes") or [],
                "unsafe": bool(disc.get("unsafeSkipCAVerification")),
                "control_plane": cp is not None, "key": (cp or {}).get("certificateKey"),
                "advertise": local.get("advertiseAddress"), "port": local.get("bindPort"),
                "nodereg": doc.get("nodeRegistration") or {},
                "patches": (doc.get("patches") or {}).get("directory")}
    else:
        nodereg = {}
        if args.node_name:
            nodereg["name"] = args.node_name
        if args.cri_socket:
            nodereg["criSocket"] = args.cri_socket
        opts = {"endpoint": args.endpoint, "token": args.discovery_token or args.token,
                "hashes": args.discovery_token_ca_cert_hash or [],
                "unsafe": args.discovery_token_unsafe_skip_ca_verification,
                "control_plane": args.control_plane, "key": args.certificate_key,
                "advertise": args.apiserver_advertise_address, "port": args.apiserver_bind_port,
                "nodereg": nodereg, "patches": None}
    errors = []
    if not opts["endpoint"]:
        errors.append("discovery.bootstrapToken.apiServerEndpoint: Required value: the API "
                      "server endpoint (the control-plane endpoint) is required")
    if not opts["token"]:
        errors.append("discovery.bootstrapToken.token: Required value: a bootstrap token is "
                      "required")
    else:
        config.check_token(opts["token"], "discovery.bootstrapToken.token", errors)
    for h in opts["hashes"]:
        if not HASH_RE.match(str(h)):
            errors.append('discovery.bootstrapToken.caCertHashes: Invalid value: "%s": invalid '
                          'hash, expected "sha256:" and 64 hex digits' % h)
    if not opts["hashes"] and not opts["unsafe"]:
        errors.append('discovery.bootstrapToken: Invalid value: "": using token-based discovery '
                      "without caCertHashes can be unsafe. Set unsafeSkipCAVerification as true "
                      "in your kubeadm config file or pass "
                      "--discovery-token-unsafe-skip-ca-verification flag to continue")
    config.check_certificate_key(opts["key"], "controlPlane.certificateKey", errors)
    if errors:
        raise config.ConfigError("\n".join(errors))
    opts["port"] = int(opts["port"] or 6443)
    opts["ignored"] = {x.lower() for x in args.ignore_preflight_errors} | \
        {str(x).lower() for x in opts["nodereg"].get("ignorePreflightErrors") or []}
    return opts


def _preflight(opts) -> None:
    print("[preflight] Running pre-flight checks")
    errors = []
    manifests = rooted(kinit.MANIFESTS)
    if os.path.isdir(manifests) and os.listdir(manifests):
        errors.append(("DirAvailable--etc-kubernetes-manifests",
                       "/etc/kubernetes/manifests is not empty"))
    for path in ("/etc/kubernetes/kubelet.conf", "/etc/kubernetes/bootstrap-kubelet.conf"):
        if os.path.exists(rooted(path)):
            errors.append(("FileAvailable-" + path.replace("/", "-"), path + " already exists"))
    if not opts["control_plane"] and os.path.exists(rooted("/etc/kubernetes/pki/ca.crt")):
        errors.append(("FileAvailable--etc-kubernetes-pki-ca.crt",
                       "/etc/kubernetes/pki/ca.crt already exists"))
    extra = config.extra_args(opts["nodereg"].get("kubeletExtraArgs"))
    host = opts["advertise"] or extra.get("node-ip") or "127.0.0.1"
    if opts["control_plane"]:
        errors += pf.control_plane(host)
        if not free_port(host, opts["port"]):
            errors.append(("Port-%d" % opts["port"], "Port %d is in use" % opts["port"]))
    common, warnings = pf.common(config.cri_socket(opts["nodereg"]), host)
    kinit.preflight(errors + common, opts["ignored"], warnings)
    if opts["control_plane"] and not opts["key"]:
        missing = [n for n in _pki.SHARED_CERTS if not os.path.exists(_pki.pki_path(n))]
        if missing:
            raise PhaseError("preflight", "\nOne or more conditions for hosting a new control "
                             "plane instance is not satisfied.\n\n[failure loading certificate "
                             "for CA: couldn't load the certificate file /etc/kubernetes/pki/"
                             "%s: open /etc/kubernetes/pki/%s: no such file or directory]\n\n"
                             "Please ensure that:\n* The cluster has a stable "
                             "controlPlaneEndpoint address.\n* The certificates that must be "
                             "shared among control plane instances are provided.\n"
                             % (missing[0], missing[0]))


def _discover(opts) -> str:
    """The cluster CA, after checking the token's JWS and the CA pin like kubeadm does."""
    server = "https://" + opts["endpoint"]
    tid = opts["token"].split(".")[0]
    deadline = time.monotonic() + timeout()
    while True:
        try:
            resp = request(server, "GET", "/api/v1/namespaces/kube-public/configmaps/"
                           "cluster-info", timeout_s=3)
            if resp.status == 200:
                break
            problem = "HTTP %d: %s" % (resp.status, resp.message())
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            problem = str(exc)
        if time.monotonic() > deadline:
            raise PhaseError("preflight", "couldn't validate the identity of the API Server: "
                             'Get "%s/api/v1/namespaces/kube-public/configmaps/cluster-info?'
                             'timeout=10s": %s' % (server, problem))
        print("[discovery] Failed to request cluster-info, will try again: " + problem)
        time.sleep(1)
    data = resp.json().get("data") or {}
    signature = data.get("jws-kubeconfig-" + tid)
    if signature is None:
        raise PhaseError("preflight", "couldn't validate the identity of the API Server: could "
                         'not find a JWS signature in the cluster-info ConfigMap for token ID '
                         '"%s"' % tid)
    secret = opts["token"].split(".")[1]
    if _pki.jws_sign(tid, secret, data["kubeconfig"]) != signature:
        raise PhaseError("preflight", "couldn't validate the identity of the API Server: failed "
                         "to verify JWS signature of received cluster info object, can't trust "
                         "this API Server")
    ca = _pki.read_kubeconfig_text(data["kubeconfig"])["ca"]
    actual = _pki.ca_cert_hash(ca)
    if opts["hashes"] and actual not in opts["hashes"]:
        raise PhaseError("preflight", "couldn't validate the identity of the API Server: "
                         "cluster CA found in cluster-info ConfigMap is invalid: none of the "
                         'public keys "%s" are pinned' % actual)
    print('[discovery] Cluster info signature and contents are valid and TLS certificate '
          'validates against pinned roots, will use API Server "%s"' % opts["endpoint"])
    return ca


def join(args) -> str:
    opts = options(args)
    _preflight(opts)
    ca = _discover(opts)
    server, token = "https://" + opts["endpoint"], opts["token"]

    def call(method, path, body=None, ok=(200, 201)):
        resp = request(server, method, path, body, ca_pem=ca, bearer=token)
        if resp.status not in ok:
            raise StandinError(resp.message() or "HTTP %d" % resp.status)
        return resp

    print("[preflight] Reading configuration from the cluster...")
    cm = call("GET", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config").json()
    cluster = json.loads(cm["data"]["ClusterConfiguration"])
    nodereg = opts["nodereg"]
    name = kinit.node_name(nodereg)
    repo = cluster.get("imageRepository") or config.DEFAULT_REPO
    endpoint = None
    if opts["control_plane"]:  # RunPullImagesCheck, after the cluster's config is known
        print("[preflight] Pulling images required for setting up a Kubernetes cluster")
        kinit.preflight(pf.image_pull(config.images(config.VERSION, repo),
                                      str(nodereg.get("imagePullPolicy") or "IfNotPresent"),
                                      config.cri_socket(nodereg)), opts["ignored"])
    if opts["control_plane"]:
        if not cluster.get("controlPlaneEndpoint"):
            raise PhaseError("preflight", "\nOne or more conditions for hosting a new control "
                             "plane instance is not satisfied.\n\nunable to add a new control "
                             "plane instance to a cluster that doesn't have a stable "
                             "controlPlaneEndpoint address\n")
        if opts["key"]:
            print("[download-certs] Downloading the certificates in Secret \"kubeadm-certs\" in "
                  'the "kube-system" Namespace')
            resp = call("GET", "/api/v1/namespaces/kube-system/secrets/kubeadm-certs",
                        ok=(200, 404))
            if resp.status == 404:
                raise PhaseError("control-plane-prepare/download-certs", "error downloading "
                                 "certs: error downloading the secret: Secret \"kubeadm-certs\" "
                                 'was not found in the "kube-system" Namespace. This Secret '
                                 "might have expired. Please, run `kubeadm init phase "
                                 "upload-certs --upload-certs` on a control plane to generate "
                                 "a new one")
            try:
                files = _pki.decrypt_certs(opts["key"], resp.json()["data"])
            except StandinError as exc:
                raise PhaseError("control-plane-prepare/download-certs", str(exc))
            targets = _extetcd.transferred(cluster)  # external etcd's files at their paths
            for fname, raw in files.items():
                path = rooted(targets[fname]) if fname in targets else _pki.pki_path(fname)
                write_file(path, raw, 0o600 if fname.endswith(".key") else 0o644)
        advertise = opts["advertise"] or "127.0.0.1"
        cpe_host = config.split_endpoint(cluster["controlPlaneEndpoint"], opts["port"])[0]
        kinit.write_control_plane(name, advertise, opts["port"], cpe_host, cluster, repo,
                                  cluster.get("networking", {}).get("serviceSubnet")
                                  or "10.96.0.0/12", opts["patches"])
        endpoint = "%s:%d" % (advertise, opts["port"])
    else:
        write_file(_pki.pki_path("ca.crt"), ca)
    node_ip = config.extra_args(nodereg.get("kubeletExtraArgs")).get("node-ip")
    address = opts["advertise"] if opts["control_plane"] and opts["advertise"] else \
        node_ip or _local_address(server, ca)
    resp = request(server, "POST", "/api/v1/nodes", kinit.node_object(
        name, address, opts["control_plane"], config.cri_socket(nodereg), endpoint),
        ca_pem=ca, bearer=token)
    if resp.status == 409:
        raise PhaseError("kubelet-start", 'a Node with name "%s" and status "Ready" already '
                         "exists in the cluster. You must delete the existing Node or change "
                         "the name of this new joining Node" % name)
    if resp.status not in (200, 201):
        raise PhaseError("kubelet-start", resp.message())
    if opts["control_plane"]:
        pair = (read_text(_pki.pki_path("apiserver-kubelet-client.crt")),
                read_text(_pki.pki_path("apiserver-kubelet-client.key")))
        state = request(server, "GET", "/kubecrate/v1/state", ca_pem=ca, client=pair)
        write_file(rooted("/var/lib/etcd/kubecrate-standin.json"), state.body, 0o600)
        print("[etcd] Announced new etcd member joining to the existing etcd cluster")
    # TLS bootstrap: the kubelet's client certificate for system:node:NAME, signed by the
    # cluster CA through the apiserver (the kubelet reports its version with it)
    key, csr = _pki.node_csr(name)
    signed = request(server, "POST", "/kubecrate/v1/csr", {"request": csr}, ca_pem=ca,
                     bearer=token)
    if signed.status not in (200, 201):
        raise PhaseError("kubelet-start", "the kubelet's client certificate was not issued: "
                         + signed.message())
    kubelet_conf = _pki.kubeconfig(server, ca, "system:node:" + name,
                                   (signed.json()["certificate"], key))
    if opts["control_plane"] and _etcdpod.binary("etcdctl") and not _extetcd.external(cluster):
        # A real etcd runs: this node becomes a member after its Node is registered (kubeadm's
        # kubelet-start phase comes before control-plane-join/etcd), since from `member add`
        # until its etcd starts a cluster of one has no quorum and the apiserver, whose objects
        # are in etcd, refuses writes; the kubelet then starts etcd and the apiserver together.
        _add_etcd_member(name, advertise, server, ca, opts["patches"])
    kinit.write_kubelet(nodereg, repo, {}, kubelet_conf)
    if opts["control_plane"]:
        try:
            wait_healthy("https://" + endpoint, ca, watch_pid_name="kubelet")
        except StandinError as exc:
            raise PhaseError("control-plane-join/etcd", str(exc))
        print("[mark-control-plane] Marking the node %s as control-plane" % name)
        return ("\nThis node has joined the cluster and a new control plane instance was "
                "created:\n\n* Certificate signing request was sent to apiserver and approval "
                "was received.\n* The Kubelet was informed of the new secure connection details."
                "\n* Control plane label and taint were applied to the new node.\n* The Kubernetes"
                " control plane instances scaled up.\n* A new etcd member was added to the local"
                "/stacked etcd cluster.\n\nTo start administering your cluster from this node, "
                "you need to run the following as a regular user:\n\n\tmkdir -p $HOME/.kube\n\t"
                "sudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config\n\tsudo chown $(id -u)"
                ":$(id -g) $HOME/.kube/config\n\nRun 'kubectl get nodes' to see this node join "
                "the cluster.\n")
    return ("\nThis node has joined the cluster:\n* Certificate signing request was sent to "
            "apiserver and a response was received.\n* The Kubelet was informed of the new "
            "secure connection details.\n\nRun 'kubectl get nodes' on the control-plane to see "
            "this node join the cluster.\n")


def _add_etcd_member(name, advertise, server, ca, patches_dir=None) -> None:
    """What kubeadm's control-plane-join/etcd phase does before the kubelet starts the new
    etcd (cmd/kubeadm/app/phases/etcd/local.go CreateStackedEtcdStaticPodManifestFile):
    `member add` on the running cluster, then etcd.yaml with every member and
    --initial-cluster-state=existing. The members' client URLs are the control planes'
    advertise addresses, as kubeadm finds them from the etcd pods of the cluster."""
    import subprocess

    pki = _pki.pki_path("")
    peers = [m.rsplit(":", 1)[0] for m in _control_plane_endpoints(server, ca)]
    argv = [_etcdpod.binary("etcdctl"), "--endpoints=" + ",".join(
        "https://%s:2379" % p for p in peers if p != advertise),
        "--cacert=" + pki + "etcd/ca.crt", "--cert=" + pki + "apiserver-etcd-client.crt",
        "--key=" + pki + "apiserver-etcd-client.key", "--dial-timeout=5s",
        "--command-timeout=30s", "member", "add", name,
        "--peer-urls=https://%s:2380" % advertise, "-w", "json"]
    # kubeadm's etcd client retries a member add with backoff (cmd/kubeadm/app/util/etcd/
    # etcd.go, addMember): etcd refuses one ("etcdserver: unhealthy cluster") while the member
    # added just before has not started yet.
    deadline = time.monotonic() + timeout()
    while True:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    if done.returncode != 0:
        raise PhaseError("control-plane-join/etcd", "error creating local etcd static pod "
                         "manifest file: %s" % done.stderr.strip()[-400:])
    members = json.loads(done.stdout).get("members") or []
    initial = ",".join("%s=%s" % (m.get("name") or name, m["peerURLs"][0]) for m in members)
    print("[etcd] Added member %s to the etcd cluster: %s" % (name, initial))
    repo_image = _read_etcd_image()
    # Patched like init's (local.go, CreateStackedEtcdStaticPodManifestFile ->
    # prepareAndWriteEtcdStaticPod with the join's patches folder).
    write_file(rooted(kinit.MANIFESTS + "/etcd.yaml"), kinit.apply_patches(_etcdpod.manifest(
        repo_image, _etcdpod.command(name, advertise, initial, existing=True)), "etcd",
        patches_dir), 0o600)


def _read_etcd_image() -> str:
    """The image of the etcd.yaml write_control_plane wrote (YAML, or JSON once patched)."""
    pod = _yaml.load_all(read_text(rooted(kinit.MANIFESTS + "/etcd.yaml")))[0]
    return str(pod["spec"]["containers"][0]["image"])


def _control_plane_endpoints(server, ca):
    """The apiserver endpoints the cluster knows (the stand-ins' member list), which are the
    control planes' advertise addresses."""
    pair = (read_text(_pki.pki_path("apiserver-kubelet-client.crt")),
            read_text(_pki.pki_path("apiserver-kubelet-client.key")))
    state = request(server, "GET", "/kubecrate/v1/state", ca_pem=ca, client=pair).json()
    return [k for k, e in sorted((state.get("members") or {}).items()) if not e.get("deleted")]


def _local_address(server: str, ca: str) -> str:
    """The address this host reaches the endpoint from (no default route needed)."""
    resp = request(server, "GET", "/healthz", ca_pem=ca)
    return resp.sockname[0] if resp.sockname else "127.0.0.1"
