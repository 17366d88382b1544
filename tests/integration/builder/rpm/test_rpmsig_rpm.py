"""builder.rpm.openpgp/rpmsig judged by the real `rpm -K` (keys imported into a private --dbpath):
every mirror-world RPM verifies with both; re-signed, byte-flipped and unsigned RPMs fail."""

import shutil
import struct

import pytest

from builder.rpm.openpgp import KeyPinError, Keyring, pinned_key, read_keys
from builder.rpm.signature import RpmSignatureError, verify_rpm
from tests.integration.rpmsigning import GpgKey, delsign, flip_byte, rpm_k

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(mirror_world):
    www = mirror_world.www
    yum = mirror_world.state["yum"]
    keys = {vendor: www / k["path"] for vendor, k in yum["gpgkeys"].items()}
    ring = Keyring(pinned_key(keys[v].read_bytes(), k["fingerprint"], repo=v, url=str(keys[v]))
                   for v, k in yum["gpgkeys"].items())
    rpms = sorted(p for rel in yum["repos"].values() for p in (www / rel).glob("Packages/*.rpm"))
    return www, yum, keys, ring, rpms


@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    key = GpgKey(tmp_path_factory.mktemp("evil") / "gnupg", "Evil twin <evil@example.invalid>")
    yield key
    key.close()


def test_every_world_rpm_verifies_with_rpm_and_with_us(world, tmp_path):
    _www, _yum, keys, ring, rpms = world
    assert len(rpms) > 100
    code, verdicts = rpm_k(tmp_path / "db", list(keys.values()), rpms)
    assert code == 0 and set(verdicts.values()) == {"digests signatures OK"}
    fingerprints = {k.fingerprint for k in ring.keys}
    for rpm in rpms:
        result = verify_rpm(rpm, ring)
        assert result.kinds == ("header", "header+payload")
        assert set(result.fingerprints) <= fingerprints
    docker = next(p for p in rpms if p.name.startswith("docker-ce-20.10.24"))
    assert verify_rpm(docker, ring).nevra == "docker-ce-20.10.24-3.el7.x86_64"


def test_docker_rpm_is_refused_with_only_the_centos_key(world):
    _www, yum, keys, ring, rpms = world
    centos = [k for k in ring.keys if k.fingerprint == yum["gpgkeys"]["centos"]["fingerprint"]]
    docker = next(p for p in rpms if p.name.startswith("docker-ce-cli-20.10.24"))
    with pytest.raises(RpmSignatureError, match=rf"{docker.name}: .*not trusted"):
        verify_rpm(docker, Keyring(centos))


def test_resigned_rpm_fails_in_both(world, evil, tmp_path):
    _www, _yum, keys, ring, rpms = world
    victim = tmp_path / "socat-1.7.3.2-2.el7.x86_64.rpm"
    shutil.copyfile(next(p for p in rpms if p.name == victim.name), victim)
    evil.sign([victim])
    code, verdicts = rpm_k(tmp_path / "db", list(keys.values()), [victim])
    assert code != 0 and "NOT OK" in verdicts[victim.name]
    with pytest.raises(RpmSignatureError, match=rf"{victim.name}: .*key id "
                       rf"{evil.fingerprint[-16:]}, which is not trusted"):
        verify_rpm(victim, ring)
    # With the attacker's key trusted, both accept it: the check is the key, nothing else.
    own = Keyring([*ring.keys, *read_keys(evil.armored)])
    assert verify_rpm(victim, own).fingerprints == (evil.fingerprint,)


@pytest.mark.parametrize("where", ["payload", "header", "signature"])
def test_byte_flipped_rpm_fails_in_both(world, tmp_path, where):
    _www, _yum, keys, ring, rpms = world
    source = next(p for p in rpms if p.name.startswith("docker-ce-20.10.24"))
    victim = tmp_path / source.name
    shutil.copyfile(source, victim)
    data = victim.read_bytes()
    # Lead (96 bytes), signature header (padded to 8), main header, payload (tech: rpmsig.py).
    count, size = struct.unpack(">II", data[96 + 8:96 + 16])
    main = 96 + 16 + 16 * count + size + (-size % 8)
    main_count, main_size = struct.unpack(">II", data[main + 8:main + 16])
    offset = {"payload": len(data) - 40,
              "header": main + 16 + 16 * main_count + main_size // 2,
              "signature": 96 + 16 + 16 * count + 100}[where]
    flip_byte(victim, offset)
    code, verdicts = rpm_k(tmp_path / "db", list(keys.values()), [victim])
    assert code != 0, verdicts
    with pytest.raises(RpmSignatureError, match=victim.name):
        verify_rpm(victim, ring)


def test_unsigned_rpm_is_refused(world, tmp_path):
    _www, _yum, keys, ring, rpms = world
    victim = tmp_path / "haproxy-1.5.18-9.el7.x86_64.rpm"
    shutil.copyfile(next(p for p in rpms if p.name == victim.name), victim)
    delsign(victim)
    _code, verdicts = rpm_k(tmp_path / "db", list(keys.values()), [victim])
    assert "signatures" not in verdicts[victim.name]  # rpm -K only reports digests
    with pytest.raises(RpmSignatureError, match=rf"{victim.name}: unsigned"):
        verify_rpm(victim, ring)


@pytest.mark.parametrize("digest", ["sha1", "sha512"])
def test_other_digests_verify_like_rpm(world, evil, tmp_path, digest):
    """Old packages carry SHA-1 signatures; some vendors sign with SHA-512."""
    _www, _yum, _keys, _ring, rpms = world
    victim = tmp_path / "socat-1.7.3.2-2.el7.x86_64.rpm"
    shutil.copyfile(next(p for p in rpms if p.name == victim.name), victim)
    evil.sign([victim], digest=digest)
    key = tmp_path / "evil.asc"
    key.write_bytes(evil.armored)
    code, verdicts = rpm_k(tmp_path / "db", [key], [victim])
    assert code == 0 and verdicts[victim.name] == "digests signatures OK"
    assert verify_rpm(victim, Keyring(read_keys(evil.armored))).fingerprints == (
        evil.fingerprint,)


def test_key_pin_mismatch_names_repo_url_and_both_fingerprints(world, evil):
    _www, yum, keys, _ring, _rpms = world
    pinned = yum["gpgkeys"]["docker"]["fingerprint"]
    url = "http://127.0.0.1/download.docker.com/linux/centos/gpg"
    with pytest.raises(KeyPinError) as err:
        pinned_key(evil.armored, pinned, repo="docker-ce-stable", url=url)
    message = err.value.message
    assert "docker-ce-stable" in message and url in message
    assert pinned in message and evil.fingerprint in message
    assert pinned_key(keys["docker"].read_bytes(), pinned.lower(), repo="d",
                      url=url).fingerprint == pinned


def test_header_only_signature_covers_the_payload_through_its_digest(world, evil, tmp_path):
    """rpm >= 4.14 signs only the header, which carries the payload digest."""
    _www, _yum, _keys, _ring, rpms = world
    victim = tmp_path / "socat-1.7.3.2-2.el7.x86_64.rpm"
    shutil.copyfile(next(p for p in rpms if p.name == victim.name), victim)
    delsign(victim)
    evil.sign([victim], v3=False)
    key = tmp_path / "evil.asc"
    key.write_bytes(evil.armored)
    ring = Keyring(read_keys(evil.armored))
    code, verdicts = rpm_k(tmp_path / "db", [key], [victim])
    assert code == 0 and verdicts[victim.name] == "digests signatures OK"
    assert verify_rpm(victim, ring).kinds == ("header",)
    flip_byte(victim, victim.stat().st_size - 40)
    code, _ = rpm_k(tmp_path / "db", [key], [victim])
    assert code != 0
    with pytest.raises(RpmSignatureError, match=f"{victim.name}: payload digest mismatch"):
        verify_rpm(victim, ring)
