"""Test PKI for the mirror world's registries: a CA, a server certificate for 127.0.0.1, and a
self-signed token-signing certificate that the token-auth registry trusts (`rootcertbundle`)."""

from __future__ import annotations

import datetime
import ipaddress
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=3650)


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kubecrate mirror world"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _write_key(path: pathlib.Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _write_cert(path: pathlib.Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    # Back-dated by a day so that a clock a little behind still accepts the certificates.
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + VALIDITY))


def make_pki(folder: pathlib.Path) -> dict:
    """Write ca/ca.crt, server.crt/.key (127.0.0.1, localhost) and token-signer.crt/.key under
    `folder`; return their paths. The CA sits alone in `ca/` so that the folder can be given
    to skopeo's `--cert-dir` (which takes every *.key there for a client key)."""
    (folder / "ca").mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("mirror-world test CA")
    ca_cert = (_builder(ca_name, ca_name, ca_key.public_key())
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                            False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                              critical=False)
               .sign(ca_key, hashes.SHA256()))

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (_builder(_name("127.0.0.1"), ca_name, server_key.public_key())
                   .add_extension(x509.SubjectAlternativeName([
                       x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                       x509.DNSName("localhost")]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                                False, False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                  critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       ca_key.public_key()), critical=False)
                   .sign(ca_key, hashes.SHA256()))

    # The registry checks a token's x5c chain against rootcertbundle; a self-signed RSA signer
    # keeps the JWS to RS256, which every JOSE implementation (and libtrust) verifies.
    signer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer_name = _name("mirror-world token signer")
    signer_cert = (_builder(signer_name, signer_name, signer_key.public_key())
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .sign(signer_key, hashes.SHA256()))

    paths = {
        "ca": folder / "ca" / "ca.crt",
        "cert_dir": folder / "ca",
        "server_cert": folder / "server.crt",
        "server_key": folder / "server.key",
        "signer_cert": folder / "token-signer.crt",
        "signer_key": folder / "token-signer.key",
    }
    _write_cert(paths["ca"], ca_cert)
    _write_cert(paths["server_cert"], server_cert)
    _write_key(paths["server_key"], server_key)
    _write_cert(paths["signer_cert"], signer_cert)
    _write_key(paths["signer_key"], signer_key)
    return {k: str(v) for k, v in paths.items()}
