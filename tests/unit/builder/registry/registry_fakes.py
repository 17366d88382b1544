"""A small in-memory OCI registry on 127.0.0.1 for the registry client's unit tests, with
knobs to inject the faults a real mirror shows: corrupt or truncated blobs, cut connections,
ignored Range headers, redirects to another port, basic and bearer auth."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple

from builder.registry.mediatypes import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(content: bytes, name: str = "file") -> Tuple[bytes, str]:
    """(gzip bytes, diff id) of a one-file tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0), digest_of(raw)


class Server:
    """A ThreadingHTTPServer on 127.0.0.1 whose requests go to `handle(handler)`."""

    def __init__(self, handle) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                handle(self)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"",
          headers: Optional[Dict[str, str]] = None) -> None:
    handler.send_response(status)
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


class FakeRegistry:
    """Images by (repository, tag); knobs are plain attributes the tests set."""

    def __init__(self) -> None:
        self.manifests: Dict[Tuple[str, str], Tuple[bytes, str]] = {}
        self.blobs: Dict[str, bytes] = {}
        self.log: List[Tuple[str, str, Dict[str, str]]] = []  # (method, path, headers)
        self.basic: Optional[Tuple[str, str]] = None  # require these credentials
        self.bearer = False  # require tokens from /token (anonymous allowed)
        self.corrupt: set = set()  # blob digests served with a flipped byte
        self.corrupt_last: set = set()  # ... with their last byte flipped (found only whole)
        self.cut: Dict[str, int] = {}  # digest -> bytes sent before cutting (once)
        self.ignore_range = False
        self.fail: Dict[str, int] = {}  # path substring -> how many 503s before success
        self.redirect_blobs: Optional[str] = None  # base URL blobs are redirected to
        self.lie_digest = False  # a wrong Docker-Content-Digest header
        self.server = Server(self._handle)
        self.url = self.server.url
        self._lock = threading.Lock()

    def close(self) -> None:
        self.server.close()

    # ------------------------------------------------------------ content

    def add_blob(self, data: bytes) -> str:
        digest = digest_of(data)
        self.blobs[digest] = data
        return digest

    def add_manifest(self, repo: str, ref: str, body: dict, media_type: str) -> Tuple[str, int]:
        data = json.dumps(body, sort_keys=True).encode()
        digest = digest_of(data)
        self.manifests[(repo, ref)] = (data, media_type)
        self.manifests[(repo, digest)] = (data, media_type)
        return digest, len(data)

    def add_image(self, repo: str, tag: str, platform: str = "linux/amd64", oci: bool = False,
                  payload: bytes = b"", diff_ids: Optional[List[str]] = None) -> dict:
        """A single-platform image with a shared base layer and its own layer."""
        os_name, arch, *variant = platform.split("/")
        layers = [layer(b"base " + platform.encode(), "etc/base"),
                  layer(payload or f"{repo}:{tag} {platform}".encode(), "app")]
        config = {"architecture": arch, "os": os_name,
                  "rootfs": {"type": "layers", "diff_ids": diff_ids or [d for _, d in layers]}}
        if variant:
            config["variant"] = variant[0]
        config_bytes = json.dumps(config).encode()
        mt = (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER) if oci else (DOCKER_MANIFEST, DOCKER_CONFIG,
                                                                 DOCKER_LAYER)
        manifest = {
            "schemaVersion": 2, "mediaType": mt[0],
            "config": {"mediaType": mt[1], "size": len(config_bytes),
                       "digest": self.add_blob(config_bytes)},
            "layers": [{"mediaType": mt[2], "size": len(gz), "digest": self.add_blob(gz)}
                       for gz, _ in layers],
        }
        digest, size = self.add_manifest(repo, tag, manifest, mt[0])
        return {"digest": digest, "size": size, "mediaType": mt[0], "manifest": manifest,
                "config": manifest["config"]["digest"],
                "layers": [x["digest"] for x in manifest["layers"]], "platform": platform}

    def add_index(self, repo: str, tag: str, platforms: List[str], oci: bool = False,
                  extra: Optional[List[dict]] = None) -> Tuple[str, Dict[str, dict]]:
        images = {p: self.add_image(repo, f"{tag}-{p.replace('/', '-')}", p, oci)
                  for p in platforms}
        entries = []
        for p, im in images.items():
            os_name, arch, *variant = p.split("/")
            plat = {"os": os_name, "architecture": arch}
            if variant:
                plat["variant"] = variant[0]
            entries.append({"mediaType": im["mediaType"], "digest": im["digest"],
                            "size": im["size"], "platform": plat})
        entries += extra or []
        kind = OCI_INDEX if oci else DOCKER_LIST
        digest, _ = self.add_manifest(repo, tag, {"schemaVersion": 2, "mediaType": kind,
                                                  "manifests": entries}, kind)
        return digest, images

    # ------------------------------------------------------------ serving

    def requests_for(self, part: str) -> List[Tuple[str, str, Dict[str, str]]]:
        return [r for r in self.log if part in r[1]]

    def _authorized(self, h: BaseHTTPRequestHandler) -> bool:
        given = h.headers.get("Authorization", "")
        if self.basic:
            want = "Basic " + base64.b64encode(":".join(self.basic).encode()).decode()
            if given != want:
                reply(h, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                      {"WWW-Authenticate": 'Basic realm="fake"'})
                return False
        if self.bearer and given != "Bearer good-token":
            reply(h, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": (
                f'Bearer realm="{self.url}/token",service="fake",scope="repository:x:pull"')})
            return False
        return True

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        with self._lock:
            self.log.append((h.command, h.path, dict(h.headers)))
            for part, left in self.fail.items():
                if part in path and left > 0:
                    self.fail[part] = left - 1
                    reply(h, 503, b"busy")
                    return
        if path == "/token":
            reply(h, 200, json.dumps({"token": "good-token", "expires_in": 300}).encode(),
                  {"Content-Type": "application/json"})
            return
        if not self._authorized(h):
            return
        if path == "/v2/":
            reply(h, 200, b"{}", {"Content-Type": "application/json"})
            return
        match = re.match(r"^/v2/(.+)/(manifests|blobs)/([^/]+)$", path)
        repo, kind, ref = match.groups() if match else ("", "", "")
        if kind == "manifests":
            found = self.manifests.get((repo, ref))
            if not found:
                reply(h, 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}',
                      {"Content-Type": "application/json"})
                return
            data, media_type = found
            served = "sha256:" + "0" * 64 if self.lie_digest else digest_of(data)
            reply(h, 200, data, {"Content-Type": media_type, "Docker-Content-Digest": served})
            return
        if kind == "blobs" and ref in self.blobs:
            if self.redirect_blobs:
                reply(h, 307, b"", {"Location": f"{self.redirect_blobs}/cdn/{ref}"})
                return
            self.serve_blob(h, ref)
            return
        reply(h, 404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')

    def serve_blob(self, h: BaseHTTPRequestHandler, digest: str) -> None:
        data = self.blobs[digest]
        if digest in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if digest in self.corrupt_last:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        start, end = 0, len(data)
        rng = h.headers.get("Range")
        if rng and not self.ignore_range:
            first, _, last = rng.split("=")[1].partition("-")
            start, end = int(first), int(last) + 1 if last else len(data)
        body = data[start:end]
        h.send_response(206 if rng and not self.ignore_range else 200)
        if rng and not self.ignore_range:
            h.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Content-Type", "application/octet-stream")
        h.end_headers()
        with self._lock:
            cut = self.cut.pop(digest, None)
        if cut is not None:
            h.wfile.write(body[:cut])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)
            return
        h.wfile.write(body)
