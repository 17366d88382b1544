"""minisign formats: parsing, canonical base64, and verification of every signed part."""

import base64
import hashlib

import pytest

from builder.bundle import keys
from builder.bundle.sign import sign_digest
from installer.format import minisig
from installer.format.errors import VerificationError

DIGEST = hashlib.blake2b(b"bundle bytes").digest()


@pytest.fixture(scope="module")
def key():
    return keys.generate()


def test_key_id_prints_reversed_upper_hex():
    assert minisig.key_id_hex(bytes.fromhex("b7e6e9e73ec1c81b")) == "1BC8C13EE7E9E6B7"


def test_signature_round_trips_through_its_file_text(key):
    signature = sign_digest(key, DIGEST, "timestamp:1\tfile:x.tar\tprehashed")
    parsed = minisig.parse_signature(signature.to_file_text())
    assert parsed == signature
    minisig.verify_digest(key.public_key, parsed, DIGEST, "x.tar")
    assert parsed.comment_fields()["file"] == "x.tar"


def test_public_key_parses_file_text_and_bare_base64(key):
    text = key.public_key.to_file_text()
    assert minisig.parse_public_key(text) == key.public_key
    assert minisig.parse_public_key(text.splitlines()[1]) == key.public_key


def test_wrong_key_names_both_key_ids(key):
    other = keys.generate()
    signature = sign_digest(key, DIGEST, "c")
    with pytest.raises(VerificationError) as err:
        minisig.verify_digest(other.public_key, signature, DIGEST, "x.tar")
    assert key.public_key.id_hex in err.value.message
    assert other.public_key.id_hex in err.value.message


def test_other_content_fails(key):
    signature = sign_digest(key, DIGEST, "c")
    minisig.verify_digest(key.public_key, signature, DIGEST, "x")  # remembered as verified
    with pytest.raises(VerificationError, match="signature does not match key"):
        minisig.verify_digest(key.public_key, signature, hashlib.blake2b(b"x").digest(), "x")


def test_swapped_trusted_comment_fails(key):
    signature = sign_digest(key, DIGEST, "bundle:good").\
        _replace(trusted_comment="bundle:evil")
    with pytest.raises(VerificationError, match="trusted comment"):
        minisig.verify_digest(key.public_key, signature, DIGEST, "x.tar")


def test_non_canonical_base64_is_refused(key):
    line = base64.b64encode(b"ED" + key.key_id + bytes(64)).decode()
    assert line.endswith("=")  # 74 bytes leave 2 unused bits in the last character
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = line[-2]
    tweaked = line[:-2] + alphabet[alphabet.index(last) ^ 1] + "="
    assert base64.b64decode(tweaked) == base64.b64decode(line)
    with pytest.raises(VerificationError, match="not canonical"):
        minisig.b64decode_strict(tweaked, "sig")


@pytest.mark.parametrize("text, message", [
    ("untrusted comment: x\nAAAA\n", "4 lines"),
    ("nope\nAAAA\ntrusted comment: x\nAAAA\n", "untrusted comment"),
])
def test_malformed_signature_files(text, message):
    with pytest.raises(VerificationError, match=message):
        minisig.parse_signature(text)


def test_legacy_algorithm_is_explained(key):
    signature = sign_digest(key, DIGEST, "c")._replace(algorithm=minisig.ALG_LEGACY)
    with pytest.raises(VerificationError, match="legacy"):
        minisig.verify_digest(key.public_key, signature, DIGEST, "x.tar")


def test_scrypt_parameters_match_minisign_defaults():
    # minisign stores opslimit 33554432 and memlimit 1073741824: scrypt N=2^20, r=8, p=1
    assert keys._scrypt_params(33554432, 1073741824) == (1 << 20, 8, 1)


# --------------------------------------------------------------------------- key rotation


def _ring(current, old, expires, today):
    return minisig.Keyring((minisig.TrustedKey(current.public_key),
                            minisig.TrustedKey(old.public_key, expires)), lambda: today)


def test_a_retiring_key_is_trusted_up_to_the_day_before_its_expiry(key):
    import datetime

    old = keys.generate()
    expires = datetime.date(2027, 6, 30)
    signature = sign_digest(old, DIGEST, "c")
    eve = _ring(key, old, expires, datetime.date(2027, 6, 29))
    minisig.verify_digest(eve, signature, DIGEST, "x.tar")
    assert minisig.retiring_until(eve, signature) == expires
    with pytest.raises(VerificationError) as err:
        minisig.verify_digest(_ring(key, old, expires, expires), signature, DIGEST, "x.tar")
    assert "x.tar was signed with key {}, which a key rotation retired".format(
        old.public_key.id_hex) in err.value.message
    assert "only before 2027-06-30 (today is 2027-06-30 UTC)" in err.value.message
    assert key.public_key.id_hex in err.value.hint
    # the current key has no expiry
    minisig.verify_digest(_ring(key, old, expires, datetime.date(2099, 1, 1)),
                          sign_digest(key, DIGEST, "c"), DIGEST, "x.tar")


def test_embedded_retiring_keys_must_be_well_formed(key):
    blob = base64.b64encode(b"Ed" + key.key_id + key.public).decode("ascii")
    good = {"key_id": key.public_key.id_hex, "public_key": blob, "expires": "2027-06-30"}
    import json

    parsed = minisig.parse_retiring(json.dumps({"retiring": [good]}), "r.json")
    assert parsed[0].key == key.public_key and str(parsed[0].expires) == "2027-06-30"
    for bad in ({"retiring": [dict(good, expires="30.6.2027")]},
                {"retiring": [dict(good, extra=1)]},
                {"retiring": good}, {}):
        with pytest.raises(VerificationError, match="r.json: not a list of retiring keys"):
            minisig.parse_retiring(json.dumps(bad), "r.json")
    with pytest.raises(VerificationError, match="is listed under id 0000"):
        minisig.parse_retiring(json.dumps({"retiring": [dict(good, key_id="0000")]}), "r.json")
