"""The apiserver stand-in's objects in a real etcd, through etcd's v3 JSON gRPC gateway.

Used when the kube-apiserver manifest names etcd as kubeadm renders it (--etcd-servers with
--etcd-cafile, --etcd-certfile, --etcd-keyfile: kubernetes cmd/kubeadm/app/phases/controlplane/
manifests.go getAPIServerCommand, for local and external etcd alike). The stand-in speaks the
gateway that etcd serves on its client URLs (etcd.io/docs/v3.5/dev-guide/api_grpc_gateway:
"etcd v3.5 or later uses only [CLIENT-URL]/v3/*"; keys and values are base64 in JSON), whose
routes are api/etcdserverpb/rpc.proto's google.api.http options: POST /v3/kv/range,
/v3/kv/put, /v3/kv/deleterange. TLS is the apiserver's: the etcd CA and the
apiserver-etcd-client pair. Values are JSON, as kube-apiserver --storage-media-type=
application/json stores them; keys follow the apiserver's /registry/<resource>/<ns>/<name>
(Nodes under /registry/minions/), the stand-in's own collections under /registry/kubecrate.io/.

There is no retry and no cache: a read is linearizable (the gateway's default, as the
apiserver's quorum reads), so without an etcd quorum every read and write fails after etcd's
request timeout with its own message ("etcdserver: request timed out"), which the apiserver
returns as a 500 Status with an empty reason (k8s.io/apiserver/pkg/endpoints/handlers/
responsewriters/status.go, ErrorToAPIStatus -> convertStorageErrorOrNot) and kubectl prints as
"Error from server: etcdserver: request timed out".
"""

import base64
import http.client
import json
import ssl

PREFIXES = {
    "configmaps": "/registry/configmaps/",
    "secrets": "/registry/secrets/",
    "nodes": "/registry/minions/",
    "objects": "/registry/kubecrate.io/objects/",
    "members": "/registry/kubecrate.io/apiserver-endpoints/",
}
REQUEST_TIMEOUT = 20.0  # longer than etcd's own (5 s + 2 x election timeout), which answers first
HEALTH_TIMEOUT = 2.0  # kube-apiserver --etcd-healthcheck-timeout's default


class EtcdError(Exception):
    """etcd refused or did not answer; str() is the message the apiserver passes on."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def wants_etcd(flags: dict) -> bool:
    """Whether a kube-apiserver's flags name a TLS etcd (kubeadm's four etcd flags)."""
    return all(flags.get(f) for f in ("etcd-servers", "etcd-cafile", "etcd-certfile",
                                      "etcd-keyfile"))


class EtcdStore:
    """get/items/put/delete on etcd keys; the same interface as apiserver.Store."""

    replicated = True  # etcd itself replicates: no state pushed between apiservers

    def __init__(self, servers: list, ca_file: str, cert_file: str, key_file: str):
        self.servers = [s.strip() for s in servers if s.strip()]
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.load_verify_locations(ca_file)
        self.ctx.load_cert_chain(cert_file, key_file)

    def call(self, path: str, body: dict, timeout_s: float = REQUEST_TIMEOUT) -> dict:
        """POST one gateway request to the first member that answers (the etcd client's
        endpoint balancer, condensed)."""
        errors = []
        for server in self.servers:
            hostport = server.split("://", 1)[-1].rstrip("/")
            host, _, port = hostport.rpartition(":")
            conn = http.client.HTTPSConnection(host.strip("[]"), int(port), timeout=timeout_s,
                                               context=self.ctx)
            try:
                conn.request("POST", path, body=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                errors.append("dial %s: %s" % (hostport, exc))
                continue
            finally:
                conn.close()
            try:
                doc = json.loads(raw.decode() or "{}")
            except ValueError:
                doc = {"message": raw.decode(errors="replace").strip()}
            if resp.status != 200:  # the gateway's JSON of a gRPC status: error, code, message
                raise EtcdError(doc.get("message") or doc.get("error") or
                                "etcd answered HTTP %d" % resp.status)
            return doc
        raise EtcdError("context deadline exceeded (%s)" % "; ".join(errors))

    def _key(self, coll: str, key: str) -> str:
        return PREFIXES[coll] + key

    def get(self, coll, key):
        kvs = self.call("/v3/kv/range", {"key": _b64(self._key(coll, key))}).get("kvs") or []
        return json.loads(_unb64(kvs[0]["value"])) if kvs else None

    def _range(self, coll):
        prefix = PREFIXES[coll]
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        kvs = self.call("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(end)}).get(
            "kvs") or []
        return [(_unb64(kv["key"])[len(prefix):], kv) for kv in kvs]

    def items(self, coll):
        return {k: json.loads(_unb64(kv["value"])) for k, kv in sorted(self._range(coll))}

    def put(self, coll, key, value):
        self.call("/v3/kv/put", {"key": _b64(self._key(coll, key)),
                                 "value": _b64(json.dumps(value, sort_keys=True))})

    def delete(self, coll, key):
        self.call("/v3/kv/deleterange", {"key": _b64(self._key(coll, key))})

    def merge(self, other: dict) -> None:
        """Nothing to merge: every apiserver reads the same etcd."""

    @property
    def data(self) -> dict:
        """Every collection in apiserver.Store's file layout (entries with a revision)."""
        out = {}
        for coll in PREFIXES:
            out[coll] = {k: {"value": json.loads(_unb64(kv["value"])),
                             "rv": [int(kv.get("mod_revision", 0)), ""]}
                         for k, kv in self._range(coll)}
        return out

    def check_health(self) -> None:
        """The apiserver's etcd health check: a quorum read of the key "health" within
        --etcd-healthcheck-timeout (k8s.io/apiserver/pkg/storage/storagebackend/factory/
        etcd3.go, newETCD3Check)."""
        self.call("/v3/kv/range", {"key": _b64("health")}, timeout_s=HEALTH_TIMEOUT)
