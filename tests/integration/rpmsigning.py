"""Test helpers around real rpm tooling: a throw-away GPG key, rpmsign with it, `rpm -K` against
a private rpmdb, and a tiny HTTP server that can damage what it serves."""

from __future__ import annotations

import contextlib
import http.server
import os
import pathlib
import shutil
import subprocess
import threading
from typing import Dict, Iterator, List, Optional, Tuple

from lab.tools import require_tool

SOURCE_DATE_EPOCH = 1700000000


def _run(argv: List[str], env: Optional[Dict[str, str]] = None) -> str:
    proc = subprocess.run(argv, env=dict(os.environ, LC_ALL="C", **(env or {})),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


class GpgKey:
    """An RSA-2048 signing key in a private GNUPGHOME; `close()` stops its agent."""

    def __init__(self, home: pathlib.Path, uid: str, cert_digest: Optional[str] = None):
        """`cert_digest` ("SHA1") sets the hash of the key's self-signatures."""
        self.home, self.uid = home, uid
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.env = {"GNUPGHOME": str(home)}
        gpg = require_tool("gpg")
        digest = ["--cert-digest-algo", cert_digest] if cert_digest else []
        _run([gpg, "--batch", "--passphrase", "", *digest, "--quick-gen-key", uid, "rsa2048",
              "sign", "never"], self.env)
        out = _run([gpg, "--batch", "--with-colons", "--list-secret-keys", f"={uid}"], self.env)
        self.fingerprint = next(ln.split(":")[9] for ln in out.splitlines()
                                if ln.startswith("fpr:"))
        self.armored = _run([gpg, "--batch", "--armor", "--export", self.fingerprint],
                            self.env).encode()

    def sign(self, rpms: List[pathlib.Path], digest: str = "sha256", v3: bool = True) -> None:
        """Replace the signatures of `rpms` with header and header+payload ones by this key
        (with `v3=False`: the header signature alone, rpm >= 4.14's default)."""
        defines = {"__gpg": require_tool("gpg"), "_gpg_path": str(self.home),
                   "_gpg_name": self.fingerprint, "_gpg_digest_algo": digest}
        argv = [require_tool("rpmsign"), "--addsign", *(["--rpmv3"] if v3 else [])]
        for name, value in defines.items():
            argv += ["--define", f"{name} {value}"]
        _run(argv + [str(r) for r in rpms], self.env)

    def close(self) -> None:
        subprocess.run([require_tool("gpgconf"), "--kill", "gpg-agent"],
                       env=dict(os.environ, **self.env), capture_output=True, timeout=30)


def delsign(rpm: pathlib.Path) -> None:
    _run([require_tool("rpmsign"), "--delsign", str(rpm)])


def rpm_k(dbpath: pathlib.Path, keys: List[pathlib.Path], rpms: List[pathlib.Path]
          ) -> Tuple[int, Dict[str, str]]:
    """`rpm -K` with only `keys` imported into a fresh rpmdb: (returncode, line per file)."""
    rpm = require_tool("rpm")
    if not dbpath.exists():
        _run([rpm, "--dbpath", str(dbpath), "--initdb"])
        for key in keys:
            _run([rpm, "--dbpath", str(dbpath), "--import", str(key)])
    proc = subprocess.run([rpm, "--dbpath", str(dbpath), "-K", *map(str, rpms)],
                          capture_output=True, text=True, timeout=300)
    lines = {}
    for line in proc.stdout.splitlines():
        path, _, verdict = line.rpartition(": ")
        lines[pathlib.Path(path).name] = verdict
    return proc.returncode, lines


def flip_byte(path: pathlib.Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@contextlib.contextmanager
def serve(root: pathlib.Path, damage: Optional[Dict[str, int]] = None) -> Iterator[str]:
    """Serve `root` over HTTP on 127.0.0.1; each path in `damage` (relative, e.g.
    "a/Packages/x.rpm") is served with the byte at that offset flipped (negative: from the
    end). Yields the base URL; the server stops when the block ends."""
    damage = damage or {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            rel = self.path.split("?", 1)[0].lstrip("/")
            target = (root / rel).resolve()
            if root.resolve() not in target.parents or not target.is_file():
                self.send_error(404)
                return
            data = bytearray(target.read_bytes())
            if rel in damage:
                data[damage[rel]] ^= 0x01
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(bytes(data))

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def copy_repo(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    shutil.copytree(src, dst)
    return dst


def createrepo(repo: pathlib.Path) -> None:
    """Regenerate repodata the way the mirror world does (gzip XML, sha256)."""
    shutil.rmtree(repo / "repodata", ignore_errors=True)
    _run([require_tool("createrepo_c"), "--quiet", "--checksum=sha256",
          "--general-compress-type=gz", "--no-database", str(repo)])
