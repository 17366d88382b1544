"""The client side of the bundle server (installer/bundleserve.py): a joining node fetches the
bundle join.yaml names from the first control-plane node over HTTPS, pinned by join.yaml's
ca_cert_hash. This and bundleserve.py are the only installer modules that open a socket.

Trust comes from join.yaml alone, as in kubeadm's token discovery: the cluster CA certificate
is fetched without verification (it is public; kubeadm reads it from the anonymous cluster-info
ConfigMap), its SubjectPublicKeyInfo must hash to ca_cert_hash, and from then on that CA is the
only trust anchor and the server must present a certificate for the address join.yaml names.
Every request for the bundle carries the bootstrap token. What arrives is checked exactly as a
copied cache folder is (installer/servedsource.py): the bundle's own signature authenticates
bundle.json, which lists every file's size and SHA-256.
"""

import http.client
import logging
import ssl
from typing import Any, Optional

from installer import joinfile
from installer.format.errors import PreconditionError, VerificationError

log = logging.getLogger(__name__)

PORT = 8447  # the default port of the bundle server (bundle_server in join.yaml names it)
CA_PATH = "/kubecrate/v1/ca.crt"
BUNDLE_PATH = "/kubecrate/v1/bundles/{digest}/{path}"
TIMEOUT = 30.0  # seconds without a byte before a request is given up (then retried)
MAX_CA_BYTES = 64 << 10


class Unreachable(PreconditionError):
    """The bundle server did not answer (a later attempt may): exit 4."""


class Fetcher:
    """GETs from the bundle server `server` ("host:port") as join.yaml `join` allows."""

    def __init__(self, server: str, join: joinfile.JoinInfo, timeout: float = TIMEOUT) -> None:
        self.host, _, port = server.rpartition(":")
        self.port = int(port)
        self.server = server
        self.join = join
        self.timeout = timeout
        self._context = None  # type: Optional[ssl.SSLContext]

    def url(self, path: str) -> str:
        return "https://{}{}".format(self.server, path)

    def _connect(self, context: ssl.SSLContext) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                           context=context)

    def pinned(self) -> ssl.SSLContext:
        """An SSL context trusting only the cluster CA whose public key join.yaml pins."""
        if self._context is not None:
            return self._context
        blind = ssl.SSLContext(ssl.PROTOCOL_TLS)  # no verification: the pin decides below
        blind.check_hostname = False
        blind.verify_mode = ssl.CERT_NONE
        response = self._get(blind, CA_PATH, None)
        pem = response.read(MAX_CA_BYTES + 1).decode("ascii", "replace")
        try:
            found = joinfile.spki_sha256(pem)
        except (ValueError, IndexError):
            raise VerificationError("{} is not a PEM certificate".format(self.url(CA_PATH)),
                                    hint="is {} a kubecrate bundle server?".format(self.server))
        if found != self.join.ca_cert_hash:
            raise VerificationError(
                "the cluster CA served by {} has public-key hash {}, but join.yaml's "
                "ca_cert_hash is {}: not the cluster join.yaml is for; nothing was "
                "fetched".format(self.server, found, self.join.ca_cert_hash),
                hint="check bundle_server and ca_cert_hash in join.yaml (write a fresh one "
                     "with `join-info` on the first control-plane node), or pass --bundle "
                     "with a copy of the bundle tar")
        context = ssl.create_default_context(cadata=pem)
        context.check_hostname = True
        self._context = context
        return context

    def open(self, path: str) -> Any:
        """The response to GET `path` with the bootstrap token, its status 200 (a stream
        whose read() gives the body), over the pinned connection."""
        return self._get(self.pinned(), path, self.join.token)

    def _get(self, context: ssl.SSLContext, path: str, token: Optional[str]) -> Any:
        headers = {"Authorization": "Bearer " + token} if token else {}
        connection = self._connect(context)
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
        except ssl.CertificateError as err:
            connection.close()
            raise VerificationError("{}: the server's certificate is not for {}: {}".format(
                self.url(path), self.host, err))
        except ssl.SSLError as err:
            connection.close()
            if "CERTIFICATE_VERIFY_FAILED" in str(err):
                raise VerificationError(
                    "{}: the server's certificate is not signed by the cluster CA join.yaml "
                    "pins: {}".format(self.url(path), err))
            raise unreachable(self.server, err)
        except (OSError, http.client.HTTPException) as err:
            connection.close()
            raise unreachable(self.server, err)
        if response.status != 200:
            text = response.read(4096).decode("utf-8", "replace").strip()
            connection.close()
            raise PreconditionError(
                "{} answered {} {}: {}".format(self.url(path), response.status,
                                               response.reason, text),
                hint="a refused or expired token: run `kubecrate-installer.pyz join-info` on "
                     "the first control-plane node and use the join.yaml it writes")
        return response


def unreachable(server: str, err: object) -> Unreachable:
    return Unreachable(
        "cannot fetch the bundle from the bundle server {}: {}".format(server, err),
        hint="is the first control-plane node installed and `systemctl status "
             "kubecrate-bundle-server` active there, and port {} open between the nodes? "
             "Or copy the bundle tar here and pass --bundle".format(server.rpartition(":")[2]))
