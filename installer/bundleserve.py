"""The bundle server on the first control-plane node (`serve-bundle`, run by the
kubecrate-bundle-server unit that installer/steps/bundleserver.py installs): joining nodes fetch
the bundle the cluster runs from it (installer/bundlefetch.py, installer/servedsource.py)
instead of having it copied to every host.

HTTPS (Python's stdlib http.server and ssl, TLS 1.2 or later), with a serving certificate that
the cluster CA (/etc/kubernetes/pki/ca.{crt,key}) signs for this node's address at every start
(RSA 2048, 30 days, issued again after a week of serving). What it answers:
  GET /kubecrate/v1/ca.crt                      anyone: the cluster CA certificate (public, as
                                                kubeadm's cluster-info ConfigMap)
  GET /kubecrate/v1/bundles/<digest>/<path>     with `Authorization: Bearer <bootstrap token>`:
                                                bundle.minisig, bundle.json or a file bundle.json
                                                lists, from the cache folder of that digest
The token and its expiry, and the digest served, come from this node's join.yaml
(/etc/kubernetes/kubecrate/join.yaml, read at every request, so `join-info` renewing the token
takes effect at once): another token gets 401, an expired one 403 with what to do, another
digest 404. The server holds no secret of its own beyond its serving key.
"""

import hmac
import http.server
import ipaddress
import logging
import os
import shutil
import socketserver
import ssl
import tempfile
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from installer import joinfile
from installer.bundlecache import folder_for
from installer.bundlefetch import BUNDLE_PATH, CA_PATH, PORT
from installer.format.errors import KubecrateError, PreconditionError
from installer.format.manifest import MANIFEST_NAME, SIGNATURE_NAME, parse_manifest
from installer.host import Host
from installer.runner import Runner

log = logging.getLogger(__name__)

CA_CERT = "/etc/kubernetes/pki/ca.crt"
CA_KEY = "/etc/kubernetes/pki/ca.key"
JOIN_FILE = "/etc/kubernetes/kubecrate/join.yaml"
SERVER_DIR = "/etc/kubernetes/kubecrate/bundle-server"
CERT_DAYS = 30
REISSUE_AFTER = 7 * 24 * 3600.0  # seconds: the certificate is issued again after a week
CHUNK = 1 << 20
BUNDLES_PREFIX = BUNDLE_PATH.split("{", 1)[0]
__all__ = ["PORT", "serve", "issue_certificate", "make_server"]


def issue_certificate(host: Host, runner: Runner, address: str, folder: str = SERVER_DIR,
                      names: Sequence[str] = (), common_name: str = "kubecrate-bundle-server",
                      days: int = CERT_DAYS) -> Tuple[str, str]:
    """A serving key and certificate in `folder` for `address` (an IP: the SAN clients check)
    and the other `names` (IPs or DNS names), signed by the cluster CA with openssl; returns
    their real paths (0600 key)."""
    for path in (CA_CERT, CA_KEY):
        if not os.path.isfile(host.path(path)):
            raise PreconditionError("{} is missing: {} runs on a control-plane node after "
                                    "kubeadm init".format(host.path(path), common_name),
                                    hint="install this node first")
    sans = ["IP:" + address] + ["{}:{}".format("IP" if _is_ip(name) else "DNS", name)
                                for name in names if name != address]
    folder = host.path(folder)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    key, cert = os.path.join(folder, "server.key"), os.path.join(folder, "server.crt")
    with tempfile.TemporaryDirectory(prefix="kubecrate-server-cert.") as work:
        csr, ext = os.path.join(work, "server.csr"), os.path.join(work, "ext.cnf")
        new_key = os.path.join(work, "server.key")
        with open(ext, "w") as out:
            out.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                      "extendedKeyUsage=serverAuth\nsubjectAltName={}\n".format(",".join(sans)))
        runner.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    new_key, "-subj", "/CN=" + common_name, "-out", csr])
        new_cert = os.path.join(work, "server.crt")
        runner.run(["openssl", "x509", "-req", "-in", csr, "-CA", host.path(CA_CERT),
                    "-CAkey", host.path(CA_KEY), "-set_serial",
                    "0x" + os.urandom(8).hex(), "-days", str(days), "-sha256",
                    "-extfile", ext, "-out", new_cert])
        os.chmod(new_key, 0o600)
        shutil.move(new_key, key + ".new")
        os.replace(key + ".new", key)
        shutil.move(new_cert, cert + ".new")
        os.replace(cert + ".new", cert)
    return cert, key


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class _Served:
    """What the handler needs: the root, the CA's PEM, bundle.json's file list per digest."""

    def __init__(self, root: str, now: Any) -> None:
        self.host = Host(root, dry_run=True)
        self.root = root
        self.now = now
        with open(self.host.path(CA_CERT), "rb") as handle:
            self.ca_pem = handle.read()
        self._files = {}  # type: Dict[str, Dict[str, int]]

    def join(self) -> Optional[joinfile.JoinInfo]:
        path = self.host.path(JOIN_FILE)
        if not os.path.isfile(path):
            return None
        with open(path, "r", encoding="utf-8") as handle:
            return joinfile.parse(handle.read(), path)

    def listed(self, digest: str) -> Dict[str, int]:
        """bundle path -> size, for the cache folder of `digest` (read once)."""
        if digest not in self._files:
            with open(os.path.join(folder_for(self.root, digest), MANIFEST_NAME), "rb") as f:
                manifest = parse_manifest(f.read())
            self._files[digest] = {spec.path: spec.size for spec in manifest.files}
        return self._files[digest]


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "kubecrate-bundle-server"
    protocol_version = "HTTP/1.0"
    served = None  # type: _Served  # set on the subclass make_server() builds

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.info("%s %s", self.address_string(), format % args)

    def _refuse(self, status: int, message: str) -> None:
        body = (message + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == CA_PATH:
            self._send_bytes(self.served.ca_pem)
            return
        if not self.path.startswith(BUNDLES_PREFIX):
            self._refuse(404, "no such path; the bundle is under " + BUNDLES_PREFIX)
            return
        join = self.served.join()
        if join is None:
            self._refuse(503, "this node has no join material (join.yaml): run "
                              "`kubecrate-installer.pyz join-info` here")
            return
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode("utf-8"),
                                   ("Bearer " + join.token).encode("utf-8")):
            self._refuse(401, "the bootstrap token is not this cluster's current one: use the "
                              "join.yaml `join-info` writes on the first control-plane node")
            return
        if join.token_expired(self.served.now()):
            self._refuse(403, "the bootstrap token expired at {}: run `kubecrate-installer.pyz "
                              "join-info` on the first control-plane node for a fresh "
                              "join.yaml".format(join.token_expires))
            return
        digest, _, name = urllib.parse.unquote(self.path[len(BUNDLES_PREFIX):]).partition("/")
        if digest != join.bundle:
            self._refuse(404, "this node serves bundle {} only".format(join.bundle))
            return
        if name not in (MANIFEST_NAME, SIGNATURE_NAME) and name not in \
                self.served.listed(digest):
            self._refuse(404, "{} is not a file of bundle {}".format(name, digest))
            return
        self._send_file(os.path.join(folder_for(self.served.root, digest), name))

    def _send_bytes(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_file(self, path: str) -> None:
        try:
            handle = open(path, "rb")
        except OSError as err:
            self._refuse(500, "cannot read {}: {}".format(path, err.strerror))
            return
        with handle:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(os.fstat(handle.fileno()).st_size))
            self.end_headers()
            shutil.copyfileobj(handle, self.wfile, CHUNK)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """One thread per connection; TLS is negotiated in that thread, not in accept(). With
    `reissue`, the serving certificate is issued again once it is REISSUE_AFTER old, so a
    server that runs for months never presents an expired one."""

    daemon_threads = True
    context = None  # type: ssl.SSLContext
    reissue = None  # type: Optional[Callable[[], Tuple[str, str]]]
    issued = 0.0
    _lock = threading.Lock()

    def _current(self) -> ssl.SSLContext:
        with self._lock:
            if self.reissue is not None and time.monotonic() - self.issued > REISSUE_AFTER:
                try:
                    self.context = _context(*self.reissue())
                    self.issued = time.monotonic()
                except (KubecrateError, ssl.SSLError, OSError) as err:
                    log.error("cannot issue the serving certificate again: %s", err)
            return self.context

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(60)
        try:
            wrapped = self._current().wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as err:
            log.info("%s: TLS handshake failed: %s", client_address[0], err)
            return
        try:
            super().finish_request(wrapped, client_address)
        finally:
            wrapped.close()


def _context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if hasattr(context, "minimum_version"):  # 3.7+; OP_NO_* is deprecated there
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # novermin
    else:
        context.options |= ssl.OP_NO_TLSv1 | ssl.OP_NO_TLSv1_1
    context.load_cert_chain(cert, key)
    return context


def make_server(root: str, address: str, port: int, cert: str, key: str,
                now: Any = None, handler: type = Handler,
                reissue: Optional[Callable[[], Tuple[str, str]]] = None
                ) -> http.server.HTTPServer:
    """The bound, not yet serving server; `now` (-> naive UTC) judges token expiry, `reissue`
    (-> cert, key paths) renews the serving certificate."""
    from installer.steps.kubeadm import now as kubeadm_now

    served = _Served(root, now or kubeadm_now)
    bound = type("BoundHandler", (handler,), {"served": served})
    server = _Server((address, port), bound)
    server.context = _context(cert, key)
    server.reissue = reissue
    server.issued = time.monotonic()
    return server


def serve(root: str, address: str, port: int = PORT) -> None:
    """Issue the serving certificate and serve until killed (the unit's process)."""
    host, runner = Host(root), Runner(root)
    cert, key = issue_certificate(host, runner, address)
    server = make_server(root, address, port, cert, key,
                         reissue=lambda: issue_certificate(host, runner, address))
    log.info("serving the bundle cache of %s on https://%s:%d/", root, address, port)
    server.serve_forever()
