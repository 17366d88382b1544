"""Zipapp building blocks without network or shiv: pins, cache-first wheel fetching, staging."""

from __future__ import annotations

import hashlib
import io
import subprocess
import zipfile

import pytest

from builder import zipapp
from builder.cache import Cache


def fake_wheel(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        record = "".join(f"{name},," + "\n" for name in files)
        archive.writestr("demo-1.0.dist-info/RECORD", record)
    return buffer.getvalue()


def pin_for(data: bytes, name: str = "demo") -> zipapp.Pin:
    digest = hashlib.sha256(data).hexdigest()
    return zipapp.Pin(name, "1.0", digest, f"{name}==1.0 --hash=sha256:{digest}")


def test_shipped_pins_are_the_3_6_releases():
    pins = {pin.key: pin.version for pin in zipapp.load_pins()}
    assert pins == {
        "click": "8.0.4", "jinja2": "3.0.3", "markupsafe": "2.0.1", "pyyaml": "6.0.1",
        "tqdm": "4.64.1", "ecdsa": "0.19.1", "six": "1.16.0", "importlib-metadata": "4.8.3",
        "zipp": "3.6.0", "typing-extensions": "4.1.1", "importlib-resources": "5.4.0"}


def test_malformed_pin_names_the_line(tmp_path):
    path = tmp_path / "req.txt"
    path.write_text("# comment\nclick>=8\n")
    with pytest.raises(zipapp.ZipappError, match=r"req\.txt:2: want NAME==VERSION"):
        zipapp.load_pins(path)


def test_cached_wheels_need_no_pip(tmp_path):
    data = fake_wheel({"demo/__init__.py": b""})
    cache = Cache(tmp_path / "cache")
    cache.put_bytes(data)

    def no_network(*args, **kwargs):
        raise AssertionError("pip must not run when the cache has every wheel")

    wheels, downloaded = zipapp.fetch_wheels([pin_for(data)], cache, run=no_network)
    assert downloaded == [] and wheels["demo"].read_bytes() == data


def test_pip_failure_says_the_cache_would_do(tmp_path):
    def offline(argv, **kwargs):
        assert "--require-hashes" in argv and "--python-version" in argv
        return subprocess.CompletedProcess(argv, 1, "", "ERROR: Could not find a version\n")

    with pytest.raises(zipapp.ZipappError, match="Could not find a version") as info:
        zipapp.fetch_wheels([pin_for(b"x")], Cache(tmp_path / "cache"), run=offline)
    assert "cache" in info.value.hint


def test_stage_drops_compiled_code_and_keeps_record_honest(tmp_path):
    wheel = tmp_path / "demo.whl"
    wheel.write_bytes(fake_wheel({
        "yaml/__init__.py": b"", "yaml/_yaml.cpython-36m-x86_64-linux-gnu.so": b"\x7fELF",
        "yaml/cyaml.py": b"import yaml._yaml", "_yaml/__init__.py": b"",
        "yaml/tests/test_x.py": b""}))
    installer = tmp_path / "installer"
    installer.mkdir()
    (installer / "cli.py").write_text("")
    (installer / "trusted.pub").write_text("stale key from a checkout")
    dest = tmp_path / "site-packages"
    dropped = zipapp.stage({"pyyaml": wheel}, "the key\n", dest, installer)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["demo-1.0.dist-info/RECORD", "installer/cli.py", "installer/trusted.pub",
                     "yaml/__init__.py"]
    assert (dest / "installer" / "trusted.pub").read_text() == "the key\n"
    assert (dest / "demo-1.0.dist-info" / "RECORD").read_text() == "yaml/__init__.py,,\n"
    assert len(dropped) == 4 and any("C extension" in d for d in dropped)
    assert all((p.stat().st_mode & 0o777) in (0o644, 0o755) for p in dest.rglob("*"))


def test_preamble_pins_the_vendor_fingerprint_once():
    text = zipapp.preamble_text("6341 ab27 53d7 8a78 a7c2  7bb1 24c6 a8a7 f4a8 0eb5")
    assert b"vendor_fingerprint=6341AB2753D78A78A7C27BB124C6A8A7F4A80EB5\n" in text
    assert b"@VENDOR_FINGERPRINT@" not in text
    assert zipapp.preamble_text() == text  # CentOS 7's key is the default


@pytest.mark.parametrize("bad", ["F4A80EB5", "6341AB2753D78A78A7C27BB124C6A8A7F4A80EBZ", "",
                                 "6341AB2753D78A78A7C27BB124C6A8A7F4A80EB5; rm -rf /"])
def test_preamble_refuses_anything_but_a_full_fingerprint(bad):
    with pytest.raises(zipapp.ZipappError, match="not 40 hex digits"):
        zipapp.preamble_text(bad)
