"""A minimal HTTPS apiserver stand-in for the VIP tests: GET /healthz answers 200 "ok", GET
/version answers 200 at once (the real apiserver serves it without asking etcd).

python3 healthz_server.py ADDRESS PORT CERT KEY [STALL_FILE]; it runs until killed (a test
host's process). While STALL_FILE exists, /healthz first waits the seconds written in it: a
busy etcd, whose check the real apiserver's /healthz runs with a 2 s timeout
(kube-apiserver --etcd-healthcheck-timeout, default 2s).
"""

import http.server
import socketserver
import ssl
import sys
import time

STALL_FILE = ""


def stall_seconds() -> float:
    try:
        with open(STALL_FILE) as handle:
            return min(float(handle.read().strip() or 0), 2.0)
    except (OSError, ValueError):
        return 0.0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        known = self.path in ("/healthz", "/version")
        if self.path == "/healthz" and STALL_FILE:
            time.sleep(stall_seconds())
        body = b"ok" if known else b"not found"
        self.send_response(200 if known else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """TLS handshakes happen in the per-connection thread, never in the accept loop: a client
    that connects and then goes silent (its host just lost the VIP) must not stall the others,
    which is what a real apiserver does too."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    context = None  # type: ssl.SSLContext

    def finish_request(self, request, client_address):
        request.settimeout(5)
        try:
            request = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        super().finish_request(request, client_address)


def main(address: str, port: str, cert: str, key: str, stall: str = "") -> None:
    global STALL_FILE
    STALL_FILE = stall
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = Server((address, int(port)), Handler)
    server.context = context
    server.serve_forever()


if __name__ == "__main__":
    main(*sys.argv[1:6])
