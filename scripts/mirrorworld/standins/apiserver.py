"""The kube-apiserver stand-in: HTTPS, the cluster state, and replication between control planes.

The kubelet stand-in runs it as the kube-apiserver static pod. State (bootstrap tokens, the
kubeadm-certs secret, config maps, nodes, applied objects, members) lives in a real etcd when
the manifest names one as kubeadm renders it (--etcd-servers, --etcd-cafile, --etcd-certfile,
--etcd-keyfile: _etcdstore.py), so that without an etcd quorum reads and writes fail as the real
apiserver's do. Otherwise it lives in <root>/var/lib/etcd/kubecrate-standin.json, which plays
etcd: every entry carries a revision stamp; a write is pushed to every other member before the
reply, and members pull from each other every few seconds, keeping the newest entry per key
(deletions are tombstones).
"""

import json
import os
import re
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import _etcdstore
import _pki
from _common import (
    FAKE_NOW_HEADER,
    VERSION,
    StandinError,
    parse_rfc3339,
    read_text,
    request,
    rooted,
    version_info,
    write_file,
)

COLLECTIONS = ("configmaps", "secrets", "nodes", "objects", "members")
SYNC_SECONDS = 3.0
MAX_LIFETIME = float(os.environ.get("KUBECRATE_STANDIN_MAX_LIFETIME", str(6 * 3600)))


class Store:
    """The replicated key-value state, persisted as one JSON file."""

    replicated = False  # the apiservers push and pull it between themselves

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()
        try:
            self.data = json.loads(read_text(path))
        except (OSError, ValueError):
            self.data = {}
        for coll in COLLECTIONS:
            self.data.setdefault(coll, {})

    def get(self, coll, key):
        entry = self.data[coll].get(key)
        return None if entry is None or entry.get("deleted") else entry["value"]

    def items(self, coll):
        return {k: e["value"] for k, e in sorted(self.data[coll].items()) if not e.get("deleted")}

    def put(self, coll, key, value):
        with self.lock:
            self.data[coll][key] = {"value": value, "rv": _rv()}
            self._save()

    def delete(self, coll, key):
        with self.lock:
            if key in self.data[coll]:
                self.data[coll][key] = {"deleted": True, "rv": _rv()}
                self._save()

    def merge(self, other: dict) -> None:
        with self.lock:
            for coll in COLLECTIONS:
                mine = self.data[coll]
                for key, entry in (other.get(coll) or {}).items():
                    if key not in mine or entry["rv"] > mine[key]["rv"]:
                        mine[key] = entry
            self._save()

    def _save(self):
        write_file(self.path, json.dumps(self.data, sort_keys=True), 0o600)

    def check_health(self):
        """The file is always there."""


def _rv():
    return [time.time(), uuid.uuid4().hex]


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, store, ctx, me, client_pair, version=VERSION):
        super().__init__(addr, Handler)
        self.store, self.ctx, self.me, self.client_pair = store, ctx, me, client_pair
        self.version = version

    def finish_request(self, request_sock, client_address):
        # TLS handshake in the worker thread, so a silent client cannot stall the listener.
        request_sock.settimeout(10)
        try:
            tls = self.ctx.wrap_socket(request_sock, server_side=True)
        except (OSError, ssl.SSLError):
            return
        self.RequestHandlerClass(tls, client_address, self)

    def handle_error(self, request_sock, client_address):
        pass

    def peers(self):
        if self.store.replicated:
            return []
        return [m for m in self.store.items("members") if m != self.me]

    def replicate(self):
        body = self.store.data
        for peer in self.peers():
            try:
                request(peer, "PUT", "/kubecrate/v1/state", body, ca_pem=_ca(),
                        client=self.client_pair, timeout_s=1.5)
            except Exception:  # a dead member must not fail the write, as with an etcd quorum
                pass

    def pull(self):
        for peer in self.peers():
            try:
                resp = request(peer, "GET", "/kubecrate/v1/state", ca_pem=_ca(),
                               client=self.client_pair, timeout_s=1.5)
                if resp.status == 200:
                    self.store.merge(resp.json())
            except Exception:
                pass


def _ca():
    return read_text(_pki.pki_path("ca.crt"))


def _status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (time.strftime("%H:%M:%S"), fmt % args))

    def send(self, code, body, content_type="application/json"):
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def now(self):
        fake = self.headers.get(FAKE_NOW_HEADER) or os.environ.get("KUBECRATE_FAKE_NOW")
        return float(fake) if fake else time.time()

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length).decode() or "null") if length else None

    def who(self):
        """'admin' (a client certificate from the cluster CA), 'bootstrap', or 'anonymous'."""
        if self.connection.getpeercert():
            return "admin"
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[7:].strip()
            tid, _, secret = token.partition(".")
            tok = self.valid_tokens().get(tid)
            if tok and tok["token-secret"] == secret and \
                    tok.get("usage-bootstrap-authentication") == "true":
                return "bootstrap"
            return "invalid"
        return "anonymous"

    def valid_tokens(self):
        """Unexpired bootstrap tokens by id; the token cleaner drops the others."""
        out = {}
        for key, secret in self.server.store.items("secrets").items():
            if not key.startswith("kube-system/bootstrap-token-"):
                continue
            data = secret.get("stringData", {})
            exp = data.get("expiration")
            if exp and parse_rfc3339(exp) <= self.now():
                continue
            out[data.get("token-id")] = data
        return out

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def do_DELETE(self):
        self.route("DELETE")

    def route(self, method):
        path = self.path.split("?", 1)[0]
        try:
            return self._route(method, path)
        except _etcdstore.EtcdError as exc:
            # an error that is not a Status: 500, reason "" (StatusReasonUnknown), etcd's
            # message (responsewriters/status.go ErrorToAPIStatus, convertStorageErrorOrNot)
            return self.send(500, _status(500, "", str(exc)))

    def _route(self, method, path):
        if method == "GET" and path in ("/healthz", "/livez", "/readyz"):
            try:
                self.server.store.check_health()
            except _etcdstore.EtcdError:  # the etcd check of /healthz (reason withheld)
                return self.send(500, "[+]ping ok\n[-]etcd failed: reason withheld\n"
                                 "%s check failed\n" % path.lstrip("/"), "text/plain")
            return self.send(200, "ok", "text/plain")
        if method == "GET" and path == "/version":
            # what the running image is: after `kubeadm upgrade apply` rewrote the manifest,
            # the kubelet restarts the pod and /version says the new release
            return self.send(200, dict(version_info(), gitVersion=self.server.version,
                                       minor=self.server.version.split(".")[1]))
        who = self.who()
        if who == "invalid":
            return self.send(401, _status(401, "Unauthorized", "Unauthorized"))
        for pattern, verbs, allowed, fn in ROUTES:
            m = re.match(pattern + r"\Z", path)
            if m and method in verbs:
                if who not in allowed:
                    return self.send(403, _status(403, "Forbidden", 'User "system:%s" cannot '
                                     "%s path %s" % (who, method.lower(), path)))
                code, body = fn(self, method, *m.groups())
                if method != "GET" and code < 300 and fn is not Handler.state:
                    self.server.replicate()
                return self.send(code, body)
        return self.send(404, _status(404, "NotFound", "the server could not find the "
                                      "requested resource"))

    # --- resources ---------------------------------------------------------------------------

    def configmap(self, method, ns, name):
        store, key = self.server.store, ns + "/" + name
        if method == "PUT":
            store.put("configmaps", key, self.body())
            return 200, store.get("configmaps", key)
        cm = store.get("configmaps", key)
        if cm is None:
            return 404, _status(404, "NotFound", 'configmaps "%s" not found' % name)
        if key == "kube-public/cluster-info":
            cm = json.loads(json.dumps(cm))
            for tid, tok in self.valid_tokens().items():
                if tok.get("usage-bootstrap-signing") == "true":
                    cm["data"]["jws-kubeconfig-" + tid] = _pki.jws_sign(
                        tid, tok["token-secret"], cm["data"]["kubeconfig"])
        elif self.who() == "anonymous" or (
                self.who() != "admin" and key != "kube-system/kubeadm-config"):
            return 403, _status(403, "Forbidden", "forbidden")
        return 200, cm

    def secret(self, method, ns, name=None):
        store = self.server.store
        if method == "POST":
            body = self.body()
            name = body["metadata"]["name"]
        key = "%s/%s" % (ns, name)
        if method == "GET" and name is None:
            items = [s for k, s in store.items("secrets").items() if k.startswith(ns + "/")]
            return 200, {"kind": "SecretList", "items": items}
        if method in ("POST", "PUT"):
            if method == "POST" and store.get("secrets", key) is not None:
                return 409, _status(409, "AlreadyExists", 'secrets "%s" already exists' % name)
            store.put("secrets", key, body if method == "POST" else self.body())
            return 201, store.get("secrets", key)
        if method == "DELETE":
            store.delete("secrets", key)
            return 200, _status(200, "", "deleted")
        secret = store.get("secrets", key)
        exp = (secret or {}).get("stringData", {}).get("expiration")
        if secret is None or (exp and parse_rfc3339(exp) <= self.now()):
            return 404, _status(404, "NotFound", 'secrets "%s" not found' % name)
        if name.startswith("bootstrap-token-") and self.who() != "admin":
            return 403, _status(403, "Forbidden", "forbidden")
        return 200, secret

    def nodes(self, method, name=None):
        store = self.server.store
        if method == "GET" and name is None:
            return 200, {"kind": "NodeList", "apiVersion": "v1",
                         "items": list(store.items("nodes").values())}
        if method == "POST":
            node = self.body()
            name = node["metadata"]["name"]
            if store.get("nodes", name) is not None:
                return 409, _status(409, "AlreadyExists", 'nodes "%s" already exists' % name)
            node["metadata"]["creationTimestamp"] = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.now()))
            store.put("nodes", name, node)
            endpoint = node["metadata"].get("annotations", {}).get(
                "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint")
            if endpoint:
                store.put("members", endpoint, {"node": name})
            return 201, node
        if method == "DELETE":
            store.delete("nodes", name)
            return 200, _status(200, "", "deleted")
        if method == "PUT":  # the kubelet's status, cordon and uncordon
            if store.get("nodes", name) is None:
                return 404, _status(404, "NotFound", 'nodes "%s" not found' % name)
            store.put("nodes", name, self.body())
            return 200, store.get("nodes", name)
        node = store.get("nodes", name)
        return (200, node) if node else (404, _status(404, "NotFound",
                                                      'nodes "%s" not found' % name))

    def apply(self, method):
        """Each object created, configured or unchanged, one by one; one the apiserver's
        update validation refuses (_immutable) is left as it was and answered with the
        Invalid Status, and the others are still applied (kubectl apply.go Run: every object
        is applied, the errors are aggregated)."""
        store, results = self.server.store, []
        for obj in self.body()["items"]:
            meta = obj.get("metadata") or {}
            key = "%s/%s/%s/%s" % (obj.get("apiVersion"), obj.get("kind"),
                                   meta.get("namespace", ""), meta.get("name"))
            old = store.get("objects", key)
            refused = _immutable(old, obj) if old is not None else None
            if refused:
                results.append({"error": _status(422, "Invalid", refused)})
                continue
            action = "created" if old is None else ("unchanged" if old == obj else "configured")
            if action != "unchanged":
                store.put("objects", key, obj)
            results.append(action)
        return 200, {"results": results}

    def objects(self, method):
        return 200, {"items": list(self.server.store.items("objects").values())}

    def state(self, method):
        if method == "PUT":
            self.server.store.merge(self.body())
        return 200, self.server.store.data

    def csr(self, method):
        """The kubelet's TLS bootstrap, condensed: a CertificateSigningRequest that the
        controller-manager approves and signs at once (_pki.sign_node_csr)."""
        try:
            return 201, {"certificate": _pki.sign_node_csr(self.body()["request"])}
        except (StandinError, KeyError, TypeError) as exc:
            return 400, _status(400, "BadRequest", str(exc))

    def member(self, method, endpoint):
        self.server.store.delete("members", endpoint)
        return 200, _status(200, "", "deleted")


# apps/v1 workloads whose spec.selector an update may not change: the registry strategies'
# ValidateUpdate (pkg/registry/apps/daemonset/strategy.go, deployment/strategy.go,
# statefulset/strategy.go, replicaset/strategy.go) call
# apivalidation.ValidateImmutableField(new.Spec.Selector, old.Spec.Selector, "spec.selector")
_SELECTOR_IMMUTABLE = ("DaemonSet", "Deployment", "StatefulSet", "ReplicaSet")


def _immutable(old, new):
    """The apiserver's message for an update that changes an immutable field, else None:
    `DaemonSet.apps "NAME" is invalid: spec.selector: Invalid value: ...: field is
    immutable` (apimachinery validation.ValidateImmutableField, field.Invalid)."""
    if new.get("apiVersion") != "apps/v1" or new.get("kind") not in _SELECTOR_IMMUTABLE:
        return None
    was = (old.get("spec") or {}).get("selector")
    now = (new.get("spec") or {}).get("selector")
    if was == now:
        return None
    return '%s.apps "%s" is invalid: spec.selector: Invalid value: %s: field is immutable' % (
        new["kind"], (new.get("metadata") or {}).get("name"), _go_selector(now or {}))


def _go_selector(selector):
    """A LabelSelector as Go's %#v prints it in the message."""
    labels = ", ".join('"%s":"%s"' % item for item in sorted(
        (selector.get("matchLabels") or {}).items()))
    return ("v1.LabelSelector{MatchLabels:map[string]string{%s}, "
            "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}" % labels)


_ADMIN, _BOOT, _ANY = ("admin",), ("admin", "bootstrap"), ("admin", "bootstrap", "anonymous")
ROUTES = [
    (r"/api/v1/namespaces/(kube-public|kube-system)/configmaps/([^/]+)", ("GET",), _ANY,
     Handler.configmap),
    (r"/api/v1/namespaces/([^/]+)/configmaps/([^/]+)", ("PUT",), _ADMIN, Handler.configmap),
    (r"/api/v1/namespaces/(kube-system)/secrets/(kubeadm-certs)", ("GET",), _BOOT,
     Handler.secret),
    (r"/api/v1/namespaces/([^/]+)/secrets/([^/]+)", ("GET", "PUT", "DELETE"), _ADMIN,
     Handler.secret),
    (r"/api/v1/namespaces/([^/]+)/secrets", ("GET", "POST"), _ADMIN, Handler.secret),
    (r"/api/v1/nodes", ("POST",), _BOOT, Handler.nodes),
    (r"/api/v1/nodes", ("GET",), _ADMIN, Handler.nodes),
    # kubeadm binds ClusterRole kubeadm:get-nodes (verb get on nodes, not list) to the group
    # system:bootstrappers:kubeadm:default-node-token (kubernetes cmd/kubeadm/app/phases/
    # bootstraptoken/node/tlsbootstrap.go AllowBootstrapTokensToGetNodes), so a joiner may
    # read a Node by name.
    (r"/api/v1/nodes/([^/]+)", ("GET",), _BOOT, Handler.nodes),
    (r"/api/v1/nodes/([^/]+)", ("DELETE", "PUT"), _ADMIN, Handler.nodes),
    (r"/kubecrate/v1/apply", ("POST",), _ADMIN, Handler.apply),
    (r"/kubecrate/v1/objects", ("GET",), _ADMIN, Handler.objects),
    (r"/kubecrate/v1/state", ("GET", "PUT"), _ADMIN, Handler.state),
    (r"/kubecrate/v1/members/([^/]+)", ("DELETE",), _ADMIN, Handler.member),
    (r"/kubecrate/v1/csr", ("POST",), _BOOT, Handler.csr),
]


def serve(manifest_flags: dict, version: str = VERSION) -> int:
    """Run until SIGTERM, the host root vanishing, or MAX_LIFETIME; flags from the manifest,
    `version` from its image's tag."""
    advertise = manifest_flags.get("advertise-address", "127.0.0.1")
    port = int(manifest_flags.get("secure-port", "6443"))
    bind = manifest_flags.get("bind-address") or advertise
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(rooted(manifest_flags["tls-cert-file"]),
                        rooted(manifest_flags["tls-private-key-file"]))
    ctx.load_verify_locations(rooted(manifest_flags["client-ca-file"]))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    client_pair = (read_text(_pki.pki_path("apiserver-kubelet-client.crt")),
                   read_text(_pki.pki_path("apiserver-kubelet-client.key")))
    if _etcdstore.wants_etcd(manifest_flags):
        store = _etcdstore.EtcdStore(
            manifest_flags["etcd-servers"].split(","), rooted(manifest_flags["etcd-cafile"]),
            rooted(manifest_flags["etcd-certfile"]), rooted(manifest_flags["etcd-keyfile"]))
    else:
        store = Store(rooted("/var/lib/etcd/kubecrate-standin.json"))
    me = "%s:%d" % (advertise, port)
    try:
        server = Server((bind, port), store, ctx, me, client_pair, version)
    except OSError as exc:
        raise StandinError("failed to create listener: failed to listen on %s:%d: %s"
                           % (bind, port, exc))
    server.pull()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                     daemon=True).start()
    sys.stderr.write("kube-apiserver stand-in serving on %s:%d\n" % (bind, port))
    sys.stderr.flush()
    started = time.monotonic()
    while time.monotonic() - started < MAX_LIFETIME and os.path.isdir(rooted("/etc/kubernetes")):
        time.sleep(SYNC_SECONDS)
        server.pull()
    server.shutdown()
    return 0
