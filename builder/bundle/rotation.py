"""Signing-key rotation (docs/security.md, "Rotating the signing key").

A new key is introduced by an installer that the *old* key signs: hosts and operators who
trust the old key can check it, and its trusted comment (covered by the old key's global
signature) names the new key in full. That installer embeds the new key as its own and the
old one as retiring, with an expiry date: bundles the old key signed verify until that day
(00:00 UTC) and are refused from then on, with the key id and the date in the error.
"""

from __future__ import annotations

import datetime
import json
from typing import NamedTuple, Optional

from builder.bundle.keys import SecretKey
from installer.format import minisig
from installer.format.errors import UsageError

RETIRING_KEYS = "trusted-retiring.json"  # installer/cliopts.py reads it with pkgutil.get_data


class RotationError(UsageError):
    """A key rotation that hosts could not follow (exit code 2)."""


class Rotation(NamedTuple):
    old_key: SecretKey  # signs the new installer; hosts trust its public half until `expires`
    expires: datetime.date  # refused from 00:00 UTC that day

    @property
    def old_id(self) -> str:
        return minisig.key_id_hex(self.old_key.key_id)

    def inputs(self) -> dict:
        """What decides the installer's bytes (builder/bundle/rebuild.py)."""
        return {"old_key": (self.old_key.key_id + self.old_key.public).hex(),
                "expires": self.expires.isoformat()}


def parse_expiry(text: str, today: Optional[datetime.date] = None) -> datetime.date:
    """`--old-key-expires`: a YYYY-MM-DD date after today (UTC). An expiry in the past would
    have every host refuse the old key's bundles at once: that is not a rotation but a
    revocation, and a build without --rotate-from does it."""
    try:
        day = datetime.datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise RotationError(f"--old-key-expires {text!r} is not a date (YYYY-MM-DD)")
    today = today or datetime.datetime.now(datetime.timezone.utc).date()
    if day <= today:
        raise RotationError(
            f"--old-key-expires {day.isoformat()} is not after today ({today.isoformat()} UTC)",
            hint="give the day from which hosts refuse bundles signed by the old key; to stop "
                 "trusting it now, build without --rotate-from")
    return day


def check_rotation(new_key: minisig.PublicKey, rotation: Rotation) -> None:
    if rotation.old_key.public_key == new_key:
        raise RotationError(
            f"--rotate-from names the signing key itself ({rotation.old_id})",
            hint="make the new key with `kubecrate keygen --out DIR` and pass it as --key")


def retiring_document(rotation: Rotation) -> bytes:
    """The installer's embedded list of retiring keys (minisig.parse_retiring reads it)."""
    public = rotation.old_key.public_key
    entry = {"key_id": public.id_hex, "public_key": _key_line(public),
             "expires": rotation.expires.isoformat()}
    return (json.dumps({"retiring": [entry]}, indent=1, sort_keys=True) + "\n").encode("utf-8")


def comment_fields(new_key: minisig.PublicKey, rotation: Rotation) -> str:
    """Trusted-comment fields of a rotating installer: the new key in full (what an operator
    who checked this file with the old key learns), and the old key's expiry."""
    return (f"\ttrusts:{new_key.id_hex} {_key_line(new_key)}"
            f"\tretiring:{rotation.old_id} expires {rotation.expires.isoformat()}")


def _key_line(key: minisig.PublicKey) -> str:
    """The base64 line of the key's minisign .pub file (its one encoder: minisig)."""
    return key.to_file_text().splitlines()[1]
