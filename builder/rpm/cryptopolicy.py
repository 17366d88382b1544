"""The target host's crypto policy, checked at build time: refuse a bundle whose RPMs or keys
the host's rpm would refuse, instead of shipping one that fails on the host.

    check_crypto_policy(major=9, packages=[(pkg.nevra, pkg.repo, path), ...],
                        keys=[(keyfile.repo, keyfile.url, keyfile.data), ...])

EL9's DEFAULT policy distrusts SHA-1 in OpenPGP signatures. rpm then says "Header V4 RSA/SHA1
Signature, key ID …: BAD" for a package (rancher/rke2-packaging#25, k3s-io/k3s#5588), and
`rpm --import` fails with "Signature not supported. Hash algorithm SHA1 not available" for a
key whose self-signatures use SHA-1 (kopia/kopia#2624, rsyslog/rsyslog-pkg-rhel-centos#125).
The builder's own verification (rpmsig, openpgp) accepts SHA-1 because EL7 and EL8 hosts do.
MD5 is refused everywhere already, and is listed here for completeness.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Tuple, Union

from builder.errors import VerificationError
from builder.rpm.openpgp import self_signature_hashes
from builder.rpm.signature import signature_hashes

__all__ = ["CryptoPolicyError", "check_crypto_policy", "weak_hashes"]


class CryptoPolicyError(VerificationError):
    """An RPM signature or a vendor key uses a hash the target's crypto policy distrusts."""


def weak_hashes(major: int) -> Tuple[str, ...]:
    """Hash names the target's DEFAULT crypto policy refuses in OpenPGP signatures."""
    return ("MD5", "SHA1") if major >= 9 else ("MD5",)


def check_crypto_policy(major: int,
                        packages: Iterable[Tuple[str, str, Union[str, Path]]],
                        keys: Iterable[Tuple[str, str, bytes]]) -> None:
    """Raise CryptoPolicyError listing every package (nevra, repo, rpm path) signed with, and
    every key file (repo, url, armored data) self-signed with, a hash EL`major` refuses."""
    weak = weak_hashes(major)
    problems: List[str] = []
    for nevra, repo, path in packages:
        for kind, name, issuer in signature_hashes(path, nevra):
            if name in weak:
                problems.append(f"{nevra} ({repo}): {kind} signature uses RSA/{name} "
                                f"(key id {issuer})")
    for repo, url, data in keys:
        bad = sorted({f"{bound} of {fpr}: {name}" for fpr, bound, name in
                      self_signature_hashes(data, f"{repo}: {url}") if name in weak})
        problems += [f"key {url} ({repo}): self-signature on {b}" for b in bad]
    if problems:
        raise CryptoPolicyError(
            f"EL{major} refuses {', '.join(weak)} in OpenPGP signatures (crypto policy DEFAULT);"
            " the host would reject:\n  " + "\n  ".join(problems),
            hint="use the vendor's packages and key re-signed with SHA-256, or a target whose "
                 "policy accepts them; kubecrate will not ship what the host refuses")
