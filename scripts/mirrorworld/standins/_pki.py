"""Certificates, kubeconfigs and the kubeadm-certs encryption of the stand-ins, all via `openssl`.

CAs and the service-account key are RSA-2048 like kubeadm's; leaf certificates use ECDSA P-256
(kubeadm's `encryptionAlgorithm: ECDSA-P256` option) because they are ten times faster to make.
"""

import hashlib
import hmac
import json
import math
import os
import secrets
import subprocess
import tempfile
import time

import _yaml
from _common import StandinError, b64, now, read_text, rooted, unb64, write_file

PKI = "/etc/kubernetes/pki"
# What `kubeadm init phase upload-certs` shares between control-plane nodes.
SHARED_CERTS = (
    "ca.crt", "ca.key", "sa.key", "sa.pub", "front-proxy-ca.crt", "front-proxy-ca.key",
    "etcd/ca.crt", "etcd/ca.key",
)


def openssl(*args, data=None) -> bytes:
    proc = subprocess.run(["openssl"] + list(args), input=data, capture_output=True)
    if proc.returncode != 0:
        raise StandinError("openssl %s failed: %s" % (args[0], proc.stderr.decode().strip()))
    return proc.stdout


def pki_path(name: str) -> str:
    return rooted(PKI + "/" + name)


def make_ca(name: str, cn: str) -> None:
    """<pki>/<name>.crt/.key, a 10-year self-signed CA, unless it already exists."""
    crt, key = pki_path(name + ".crt"), pki_path(name + ".key")
    if os.path.exists(crt) and os.path.exists(key):
        return
    os.makedirs(os.path.dirname(crt), exist_ok=True)
    openssl("genrsa", "-out", key, "2048")
    os.chmod(key, 0o600)
    openssl(
        "req", "-x509", "-new", "-key", key, "-out", crt, "-days", "3650", "-subj", "/CN=" + cn,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign",
    )


def leaf_days() -> str:
    """kubeadm's leaf validity, one year from *its* now (constants.CertificateValidity,
    8760 h). openssl counts from the machine's clock, so with KUBECRATE_FAKE_NOW ahead of it
    the days in between are added: the certificate then ends a year after the fake now."""
    ahead = max(0.0, now() - time.time())
    return str(365 + int(math.ceil(ahead / 86400.0)))


def make_cert(ca: str, cn: str, org: str = "", sans=(), server=False, client=False):
    """A 1-year leaf certificate signed by <pki>/<ca>.crt; returns (cert_pem, key_pem)."""
    with tempfile.TemporaryDirectory() as tmp:
        key, csr, crt, ext = (os.path.join(tmp, n) for n in ("k", "csr", "crt", "ext"))
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        subj = "/CN=" + cn + ("/O=" + org if org else "")
        openssl("req", "-new", "-key", key, "-out", csr, "-subj", subj)
        usages = [u for u, on in (("serverAuth", server), ("clientAuth", client)) if on]
        lines = ["basicConstraints=critical,CA:FALSE",
                 "keyUsage=critical,digitalSignature,keyEncipherment",
                 "extendedKeyUsage=" + ",".join(usages)]
        if sans:
            lines.append("subjectAltName=" + ",".join(_san(s) for s in sans))
        write_file(ext, "\n".join(lines) + "\n")
        openssl(
            "x509", "-req", "-in", csr, "-CA", pki_path(ca + ".crt"), "-CAkey",
            pki_path(ca + ".key"), "-set_serial", str(secrets.randbits(62)), "-days", leaf_days(),
            "-extfile", ext, "-out", crt,
        )
        return read_text(crt), read_text(key)


def node_csr(name: str):
    """(key_pem, csr_pem) the kubelet's TLS bootstrap sends: CN system:node:NAME, O
    system:nodes (pkg/kubelet/certificate/bootstrap/bootstrap.go requestNodeCertificate)."""
    with tempfile.TemporaryDirectory() as tmp:
        key, csr = os.path.join(tmp, "k"), os.path.join(tmp, "csr")
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        openssl("req", "-new", "-key", key, "-out", csr, "-subj",
                "/CN=system:node:%s/O=system:nodes" % name)
        return read_text(key), read_text(csr)


def sign_node_csr(csr_pem: str) -> str:
    """What kube-controller-manager's csrapprover + csrsigning do for a kubelet's client CSR
    (signer kubernetes.io/kube-apiserver-client-kubelet, auto-approved for a bootstrap token's
    group: pkg/controller/certificates/approver/sarapprove.go): a one-year client certificate
    from the cluster CA, for a subject of system:node:* in system:nodes only."""
    with tempfile.TemporaryDirectory() as tmp:
        csr, crt, ext = (os.path.join(tmp, n) for n in ("csr", "crt", "ext"))
        write_file(csr, csr_pem)
        subject = openssl("req", "-in", csr, "-noout", "-subject",
                          "-nameopt", "RFC2253").decode()
        if "CN=system:node:" not in subject or "O=system:nodes" not in subject:
            raise StandinError("csr subject %s is not a kubelet's (system:node:NAME in "
                               "system:nodes)" % subject.strip())
        write_file(ext, "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,"
                   "digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n")
        openssl("x509", "-req", "-in", csr, "-CA", pki_path("ca.crt"), "-CAkey",
                pki_path("ca.key"), "-set_serial", str(secrets.randbits(62)), "-days",
                leaf_days(), "-extfile", ext, "-out", crt)
        return read_text(crt)


def _san(value: str) -> str:
    import ipaddress

    try:
        ipaddress.ip_address(value)
        return "IP:" + value
    except ValueError:
        return "DNS:" + value


def write_pair(name: str, pair) -> None:
    write_file(pki_path(name + ".crt"), pair[0])
    write_file(pki_path(name + ".key"), pair[1], 0o600)


def make_sa_key() -> None:
    if os.path.exists(pki_path("sa.key")):
        return
    openssl("genrsa", "-out", pki_path("sa.key"), "2048")
    os.chmod(pki_path("sa.key"), 0o600)
    openssl("rsa", "-in", pki_path("sa.key"), "-pubout", "-out", pki_path("sa.pub"))


def ca_cert_hash(ca_pem: str) -> str:
    """kubeadm's discovery pin: sha256 of the CA's DER SubjectPublicKeyInfo."""
    pub = openssl("x509", "-pubkey", "-noout", data=ca_pem.encode())
    der = openssl("pkey", "-pubin", "-outform", "DER", data=pub)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def kubeconfig(server: str, ca_pem: str, user: str, pair=None) -> str:
    """A kubeconfig in the layout kubeadm writes; pair None gives a cluster-info kubeconfig."""
    cluster = (
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: %s\n"
        "    server: %s\n  name: %s\n" % (b64(ca_pem), server, "kubernetes" if pair else '""')
    )
    if pair is None:
        return cluster + "contexts: null\ncurrent-context: \"\"\nkind: Config\n" \
            "preferences: {}\nusers: null\n"
    ctx = "%s@kubernetes" % user
    return cluster + (
        "contexts:\n- context:\n    cluster: kubernetes\n    user: %s\n  name: %s\n"
        "current-context: %s\nkind: Config\npreferences: {}\nusers:\n- name: %s\n  user:\n"
        "    client-certificate-data: %s\n    client-key-data: %s\n"
        % (user, ctx, ctx, user, b64(pair[0]), b64(pair[1]))
    )


def read_kubeconfig(path: str) -> dict:
    """{server, ca, cert, key, token} from a kubeconfig's current context (else first entries)."""
    try:
        text = read_text(path)
    except OSError as exc:
        raise StandinError("invalid configuration: unable to read %s: %s" % (path, exc))
    return read_kubeconfig_text(text, path)


def read_kubeconfig_text(text: str, path: str = "cluster-info") -> dict:
    try:
        doc = _yaml.load_all(text)[0]
    except (IndexError, ValueError) as exc:
        raise StandinError("invalid configuration: unable to read %s: %s" % (path, exc))

    def pick(kind, name):
        items = doc.get(kind) or []
        for item in items:
            if item.get("name") == name:
                return item
        return items[0] if items else {}

    ctx = pick("contexts", doc.get("current-context")).get("context") or {}
    cluster = pick("clusters", ctx.get("cluster")).get("cluster") or {}
    user = pick("users", ctx.get("user")).get("user") or {}
    if not cluster.get("server"):
        raise StandinError("invalid configuration: no server found for cluster in " + path)
    out = {"server": cluster["server"], "ca": None, "cert": None, "key": None,
           "token": user.get("token")}
    if cluster.get("certificate-authority-data"):
        out["ca"] = unb64(cluster["certificate-authority-data"]).decode()
    if user.get("client-certificate-data"):
        out["cert"] = unb64(user["client-certificate-data"]).decode()
        out["key"] = unb64(user["client-key-data"]).decode()
    return out


def encrypt_certs(key_hex: str, paths=None) -> dict:
    """The shared certificates (`paths`: {name: real path}, default SHARED_CERTS in the pki
    folder), AES-256-CBC under the certificate key plus an HMAC-SHA256 tag."""
    key = _cert_key(key_hex)
    files = {}
    for name, path in sorted((paths or {n: pki_path(n) for n in SHARED_CERTS}).items()):
        try:
            with open(path, "rb") as f:
                files[name] = b64(f.read())
        except OSError as exc:
            raise StandinError("error uploading certs: failed to load %s: %s" % (name, exc))
    iv = secrets.token_bytes(16)
    ct = openssl("enc", "-aes-256-cbc", "-K", key.hex(), "-iv", iv.hex(),
                 data=json.dumps(files).encode())
    tag = hmac.new(key, iv + ct, hashlib.sha256).digest()
    return {"iv": b64(iv), "ciphertext": b64(ct), "tag": b64(tag)}


def decrypt_certs(key_hex: str, blob: dict) -> dict:
    key = _cert_key(key_hex)
    iv, ct = unb64(blob["iv"]), unb64(blob["ciphertext"])
    if not hmac.compare_digest(hmac.new(key, iv + ct, hashlib.sha256).digest(),
                               unb64(blob["tag"])):
        raise StandinError(
            "error downloading certs: error decrypting data: cipher: message authentication failed"
        )
    plain = openssl("enc", "-d", "-aes-256-cbc", "-K", key.hex(), "-iv", iv.hex(), data=ct)
    return {name: unb64(data) for name, data in json.loads(plain).items()}


def _cert_key(key_hex: str) -> bytes:
    try:
        key = bytes.fromhex(key_hex)
    except ValueError as exc:
        raise StandinError("error decoding certificate key: encoding/hex: %s" % exc)
    if len(key) != 32:
        raise StandinError("error decoding certificate key: crypto/aes: invalid key size %d"
                           % len(key))
    return key


def new_certificate_key() -> str:
    return secrets.token_hex(32)


def jws_sign(token_id: str, secret: str, payload: str) -> str:
    """The detached JWS (HS256) the bootstrap signer adds to cluster-info for each token."""
    import base64

    def enc(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    header = enc(json.dumps({"alg": "HS256", "kid": token_id}, separators=(",", ":")).encode())
    signing_input = header + "." + enc(payload.encode())
    key = (token_id + "." + secret).encode()
    return header + ".." + enc(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


# kubeadm's certificate list for a stacked-etcd control plane (cmd/kubeadm/app/phases/certs/
# certlist.go, GetDefaultCertList; kubeconfigs: phases/kubeconfig/kubeconfig.go): the long name
# `certs renew all` prints (phases/certs/renewal/readwriter.go and cmd/phases/certs.go
# "certificate for serving the Kubernetes API" ...), the CA, and how to issue it again.
LEAVES = (
    ("admin.conf", "certificate embedded in the kubeconfig file for the admin to use and for "
     "kubeadm itself", "ca"),
    ("apiserver", "certificate for serving the Kubernetes API", "ca"),
    ("apiserver-etcd-client", "certificate the apiserver uses to access etcd", "etcd/ca"),
    ("apiserver-kubelet-client", "certificate for the API server to connect to kubelet", "ca"),
    ("controller-manager.conf", "certificate embedded in the kubeconfig file for the "
     "controller manager to use", "ca"),
    ("etcd/healthcheck-client", "certificate for liveness probes to healthcheck etcd",
     "etcd/ca"),
    ("etcd/peer", "certificate for etcd nodes to communicate with each other", "etcd/ca"),
    ("etcd/server", "certificate for serving etcd", "etcd/ca"),
    ("front-proxy-client", "certificate for the front proxy client", "front-proxy-ca"),
    ("scheduler.conf", "certificate embedded in the kubeconfig file for the scheduler manager "
     "to use", "ca"),
)
KUBECONFIG_USERS = {"admin.conf": ("kubernetes-admin", "system:masters"),
                    "controller-manager.conf": ("system:kube-controller-manager", ""),
                    "scheduler.conf": ("system:kube-scheduler", "")}


def _attributes(cert_pem: str):
    """(cn, org, sans, server, client) of an existing certificate, to issue it again with the
    same attributes as kubeadm's renewal does (renewal/manager.go, certToConfig)."""
    subject = openssl("x509", "-noout", "-subject", "-nameopt", "sep_multiline,sname",
                      data=cert_pem.encode()).decode()
    cn = org = ""
    for line in subject.splitlines():
        key, _, value = line.strip().partition("=")
        if key == "CN":
            cn = value
        elif key == "O":
            org = value
    text = openssl("x509", "-noout", "-ext", "subjectAltName,extendedKeyUsage",
                   data=cert_pem.encode()).decode()
    sans = [item.strip().split(":", 1)[1] for item in text.replace("\n", ",").split(",")
            if item.strip().startswith(("DNS:", "IP Address:"))]
    return cn, org, sans, "TLS Web Server" in text, "TLS Web Client" in text


def renew_all() -> list:
    """`kubeadm certs renew all`: every leaf certificate and kubeconfig client certificate that
    exists is issued again by its CA, one year from now, with a new key; missing ones are
    reported and skipped; the CAs are never renewed. Returns the lines kubeadm prints."""
    lines = []
    for name, long_name, ca in LEAVES:
        if not os.path.exists(pki_path(ca + ".key")):
            raise StandinError("[renew] failed to renew %s: couldn't load the certificate "
                               "authority key %s/%s.key: the CA is external (not modelled "
                               "further)" % (name, PKI, ca))
        if name.endswith(".conf"):
            path = rooted("/etc/kubernetes/" + name)
            if not os.path.exists(path):
                lines.append("MISSING! " + long_name)
                continue
            text = read_text(path)
            server = read_kubeconfig_text(text, path)["server"]
            user, org = KUBECONFIG_USERS[name]
            pair = make_cert(ca, user, org, client=True)
            write_file(path, kubeconfig(server, read_text(pki_path("ca.crt")), user, pair),
                       0o600)
        else:
            if not os.path.exists(pki_path(name + ".crt")):
                lines.append("MISSING! " + long_name)
                continue
            cn, org, sans, server, client = _attributes(read_text(pki_path(name + ".crt")))
            write_pair(name, make_cert(ca, cn, org, sans, server=server, client=client))
        lines.append(long_name + " renewed")
    return lines
