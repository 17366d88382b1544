"""EL9's crypto policy at build time: an RPM signed with RSA/SHA1, or a vendor key whose
self-signatures use SHA-1, is refused for an EL9 target (naming the package or key) and
accepted for EL7/EL8, whose rpm still takes SHA-1. `rpm -Kv` (the real tool) reads the same
hash from the same files as the builder does."""

import subprocess

import pytest
from lab.tools import require_tool

from builder.rpm.cryptopolicy import CryptoPolicyError, check_crypto_policy
from builder.rpm.signature import signature_hashes
from installer.format.errors import ExitCode
from tests.integration.rpmsigning import GpgKey
from tests.tinyrpms import build_rpm

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """(sha1-signed rpm, sha256-signed rpm, armored SHA-256 key, armored SHA-1 key)."""
    tmp = tmp_path_factory.mktemp("policy")
    key = GpgKey(tmp / "new", "Vendor <vendor@kubecrate.invalid>")
    old = GpgKey(tmp / "old", "Old vendor <old@kubecrate.invalid>", cert_digest="SHA1")
    try:
        sha1 = build_rpm(tmp / "sha1", "rke2-selinux", "0.9-1.el8")
        sha256 = build_rpm(tmp / "sha256", "container-selinux", "3:2.188.0-1.el9_0")
        key.sign([sha1], digest="sha1")  # header and header+payload, as EL7/EL8 builds carry
        key.sign([sha256], digest="sha256")
        yield sha1, sha256, key.armored, old.armored
    finally:
        key.close()
        old.close()


def test_the_builder_reads_the_hash_rpm_reads(signed):
    sha1, sha256, _, _ = signed
    assert {h for _, h, _ in signature_hashes(sha1)} == {"SHA1"}
    assert {h for _, h, _ in signature_hashes(sha256)} == {"SHA256"}
    out = subprocess.run([require_tool("rpm"), "-Kv", str(sha1)], capture_output=True,
                         text=True).stdout
    assert "Header V4 RSA/SHA1 Signature" in out


def test_a_sha1_signed_rpm_is_refused_for_el9_naming_the_package(signed):
    sha1, sha256, good_key, _ = signed
    packages = [("rke2-selinux-0.9-1.el8.noarch", "rancher", sha1),
                ("container-selinux-3:2.188.0-1.el9_0.noarch", "appstream", sha256)]
    with pytest.raises(CryptoPolicyError) as err:
        check_crypto_policy(9, packages, [("rancher", "https://x.invalid/key", good_key)])
    message = err.value.message
    assert "rke2-selinux-0.9-1.el8.noarch (rancher): header signature uses RSA/SHA1" in message
    assert "header+payload signature uses RSA/SHA1" in message
    assert "container-selinux" not in message and "key https" not in message
    assert err.value.exit_code == ExitCode.VERIFY_FAILED
    for major in (7, 8):  # their rpm still accepts SHA-1
        check_crypto_policy(major, packages, [("rancher", "https://x.invalid/key", good_key)])


def test_a_key_self_signed_with_sha1_is_refused_for_el9(signed):
    _, sha256, good_key, old_key = signed
    packages = [("container-selinux-3:2.188.0-1.el9_0.noarch", "appstream", sha256)]
    keys = [("appstream", "https://x.invalid/good", good_key),
            ("legacy", "https://x.invalid/RPM-GPG-KEY-old", old_key)]
    with pytest.raises(CryptoPolicyError) as err:
        check_crypto_policy(9, packages, keys)
    assert err.value.message.count("\n  ") == 1
    assert ("key https://x.invalid/RPM-GPG-KEY-old (legacy): self-signature on user id "
            "'Old vendor <old@kubecrate.invalid>'") in err.value.message
    assert err.value.message.endswith(": SHA1")
    check_crypto_policy(8, packages, keys)
