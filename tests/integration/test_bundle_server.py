"""The first control plane's bundle server (installer/bundleserve.py) and a joiner's fetch
(`fetch-bundle`, what `install --join` without --bundle does first), on 127.0.0.1:8447 with a
CA made by openssl: the fetch runs in the real .pyz on CPython 3.6.15, the server in this
process (so that a test can make it tamper with one transfer). No install, no namespaces."""

import datetime
import hashlib
import shutil
import subprocess
import threading

import pytest
from lab import py36
from lab.bundles import make_key, make_source, pack_source

from installer import joinfile
from installer.bundleserve import Handler, issue_certificate, make_server
from installer.format import minisig
from installer.host import Host
from installer.runner import Runner
from installer.source import open_source

pytestmark = pytest.mark.integration
PORT = 8447
TAMPERED = "images/images.tar"


def _ca(folder):
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=kubernetes", "-keyout", str(folder / "ca.key"),
                    "-out", str(folder / "ca.crt")], check=True, capture_output=True,
                   timeout=60)
    return joinfile.spki_sha256((folder / "ca.crt").read_text())


class Lab:
    """A first control plane's root (CA, join.yaml, the bundle in its cache) and a joiner."""

    def __init__(self, top, installer_pyz):
        self.top = top
        secret_key, _secret, self.public = make_key(top / "keys")
        tar = pack_source(make_source(top / "src"), top / "k8s.tar", secret_key).path
        self.server_root = top / "cp1"
        self.ca_hash = _ca(self.server_root / "etc/kubernetes/pki")
        trust = minisig.parse_public_key(self.public.read_text())
        staged = open_source(str(tar)).stage(trust, str(self.server_root))
        self.cache = staged.commit()
        self.digest = self.cache.rstrip("/").rsplit("/", 1)[1]
        expires = datetime.datetime.utcnow() + datetime.timedelta(hours=1)
        self.join = joinfile.JoinInfo("127.0.0.1:6443", joinfile.new_token(),
                                      joinfile.format_time(expires), self.ca_hash, None, None,
                                      self.digest, "127.0.0.1:{}".format(PORT))
        self.write_server_join(self.join)
        self.pyz = installer_pyz

    def write_server_join(self, info):
        path = self.server_root / "etc/kubernetes/kubecrate/join.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        joinfile.write(str(path), info)

    def fetch(self, name, info=None):
        """`fetch-bundle` in the .pyz on CPython 3.6 into a fresh joiner root."""
        root = self.top / name
        path = self.top / (name + "-join.yaml")
        joinfile.write(str(path), info or self.join)
        done = subprocess.run(
            [str(py36.python36()), str(self.pyz), "fetch-bundle", "--join", str(path),
             "--root", str(root), "--key", str(self.public)],
            capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
        return done, root


@pytest.fixture
def lab(tmp_path, installer_pyz, source_date_epoch):
    return Lab(tmp_path, installer_pyz)


@pytest.fixture
def server(lab):
    """The bundle server of lab's first control plane on 127.0.0.1:8447; `tamper` names the
    files whose next transfer has one byte flipped (each entry used once)."""
    cert, key = issue_certificate(Host(str(lab.server_root)), Runner(str(lab.server_root)),
                                  "127.0.0.1")
    tamper = []

    class Tampering(Handler):
        def _send_file(self, path):
            if tamper and path.endswith("/" + tamper[0]):
                tamper.pop(0)
                data = bytearray(open(path, "rb").read())
                data[len(data) // 2] ^= 0xFF
                self._send_bytes(bytes(data))
                return
            super()._send_file(path)

    reissued = []

    def reissue():
        reissued.append(1)
        return issue_certificate(Host(str(lab.server_root)), Runner(str(lab.server_root)),
                                 "127.0.0.1")

    httpd = make_server(str(lab.server_root), "127.0.0.1", PORT, cert, key, handler=Tampering,
                        reissue=reissue)
    httpd.reissued = reissued
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.tamper = tamper
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def cached(root):
    folder = root / "var/lib/kubecrate/bundles"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_tampered_transfer_is_refused_and_fetched_again(lab, server):
    """One transfer of images/images.tar arrives with a flipped byte: refused, fetched again,
    and the joiner's cache holds exactly the signed bundle. When every transfer is tampered
    (the server's copy damaged), the fetch stops after 3 tries with exit 3 naming the file,
    and nothing is left in the joiner's cache."""
    server.tamper.append(TAMPERED)
    done, root = lab.fetch("w1")
    assert done.returncode == 0, done.stderr
    assert "{}: transfer 1 of 3 refused".format(TAMPERED) in done.stderr, done.stderr
    assert "fetching it again" in done.stderr
    assert cached(root) == [lab.digest]
    got = root / "var/lib/kubecrate/bundles" / lab.digest / TAMPERED
    want = (lab.top / "src" / TAMPERED).read_bytes()
    assert hashlib.sha256(got.read_bytes()).hexdigest() == hashlib.sha256(want).hexdigest()

    server.tamper.extend([TAMPERED] * 3)
    done, root = lab.fetch("w2")
    assert done.returncode == 3, done.stderr
    assert TAMPERED in done.stderr and "refused 3 times" in done.stderr, done.stderr
    assert "https://127.0.0.1:{}/".format(PORT) in done.stderr
    assert cached(root) == [], cached(root)  # no staging folder, no partial cache


def test_a_wrong_ca_hash_or_a_stale_token_is_refused(lab, server, tmp_path, monkeypatch):
    """join.yaml pinning another CA: exit 3 before any byte of the bundle is fetched. A token
    the server does not know (401), or its own expired (403): exit 4, saying to run
    join-info. (Meanwhile the server issues its certificate again at every connection, as it
    does after a week: the pinned client still accepts it.)"""
    monkeypatch.setattr("installer.bundleserve.REISSUE_AFTER", 0.0)
    other = _ca(tmp_path / "other-ca")
    done, root = lab.fetch("w1", lab.join._replace(ca_cert_hash=other))
    assert done.returncode == 3, done.stderr
    assert "has public-key hash {}".format(lab.ca_hash) in done.stderr, done.stderr
    assert "ca_cert_hash is {}".format(other) in done.stderr
    assert cached(root) == []

    done, root = lab.fetch("w2", lab.join._replace(token=joinfile.new_token()))
    assert done.returncode == 4, done.stderr
    assert "401" in done.stderr and "join-info" in done.stderr, done.stderr

    lab.write_server_join(lab.join._replace(token_expires="2020-01-01T00:00:00Z"))
    done, root = lab.fetch("w3")
    assert done.returncode == 4, done.stderr
    assert "403" in done.stderr and "expired at 2020-01-01T00:00:00Z" in done.stderr
    assert cached(root) == []
    assert len(server.reissued) >= 3, server.reissued
    shutil.rmtree(str(root), ignore_errors=True)
