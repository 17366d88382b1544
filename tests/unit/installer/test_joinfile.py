"""join.yaml: generated secrets, round trip, validation, expiry, mode 0600, and the CA hash."""

import datetime
import logging
import os
import re
import stat

import pytest
from lab import lbsamples

from installer import joinfile
from tests.golden_files import check_golden


def test_generated_secrets_have_kubeadms_formats_and_differ():
    tokens = {joinfile.new_token() for _ in range(50)}
    keys = {joinfile.new_certificate_key() for _ in range(50)}
    assert len(tokens) == 50 and len(keys) == 50
    assert all(re.match(r"^[a-z0-9]{6}\.[a-z0-9]{16}$", t) for t in tokens)
    assert all(re.match(r"^[0-9a-f]{64}$", k) for k in keys)


def test_round_trip_and_golden():
    info = lbsamples.join_info()
    text = joinfile.dump(info)
    check_golden("join/join.yaml", text)
    assert joinfile.parse(text) == info
    assert info.token_expires == "2024-01-02T12:00:00Z"
    assert info.certificate_key_expires == "2024-01-01T14:00:00Z"


def test_expiry():
    info = lbsamples.join_info()
    later = lbsamples.NOW + datetime.timedelta(hours=2, minutes=1)
    assert not info.certificate_key_expired(lbsamples.NOW)
    assert info.certificate_key_expired(later) and not info.token_expired(later)
    assert info.token_expired(lbsamples.NOW + datetime.timedelta(hours=24))


@pytest.mark.parametrize("old,new,key", [
    ('token: "abcdef.0123456789abcdef"', 'token: "abcdef0123456789abcdef"', "token"),
    ('endpoint: "10.213.0.100:8443"', 'endpoint: "10.213.0.100"', "endpoint"),
    ("ca_cert_hash: \"sha256:", "ca_cert_hash: \"md5:", "ca_cert_hash"),
    ('certificate_key: "', "certificate_key: 0123 #", "certificate_key"),
    ('token_expires: "2024-01-02T12:00:00Z"', 'token_expires: "tomorrow"', "token_expires"),
    ("format_version: 1", "format_version: 1\nextra: 1", "extra"),
    ("format_version: 1", 'format_version: 1\nbundle: "v1.23.17"', "bundle"),
    ("format_version: 1", 'format_version: 1\nbundle_server: "https://cp1"', "bundle_server"),
])
def test_invalid_join_file_names_the_key(old, new, key):
    text = joinfile.dump(lbsamples.join_info()).replace(old, new)
    with pytest.raises(joinfile.JoinFileError) as err:
        joinfile.parse(text, "/tmp/join.yaml")
    assert err.value.message.startswith("/tmp/join.yaml: {}: ".format(key))


def test_write_is_mode_0600_and_loads_back(tmp_path):
    path = tmp_path / "join.yaml"
    path.write_text("old")
    os.chmod(str(path), 0o644)
    joinfile.write(str(path), lbsamples.join_info())
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600
    assert joinfile.load(str(path)) == lbsamples.join_info()
    assert os.listdir(str(tmp_path)) == ["join.yaml"]


class _Recorder:
    def __init__(self):
        self.argvs = []

    def run(self, argv, readonly=False):
        self.argvs.append(argv)

        class Result:
            stdout = "{} *{}\n".format("ab" * 32, argv[-1])
        return Result()


def test_ca_cert_hash_runs_openssl_argv_lists():
    runner = _Recorder()
    assert joinfile.ca_cert_hash(runner, "/etc/kubernetes/pki/ca.crt") == "sha256:" + "ab" * 32
    assert [argv[:2] for argv in runner.argvs] == [["openssl", "x509"], ["openssl", "pkey"],
                                                  ["openssl", "dgst"]]
    assert runner.argvs[0][2:4] == ["-in", "/etc/kubernetes/pki/ca.crt"]
    with pytest.raises(ValueError):
        joinfile.parse_dgst("garbage")


@pytest.mark.parametrize("mode, words", [(0o644, "readable"), (0o666, "writable"),
                                         (0o640, "readable")])
def test_join_material_open_to_others_is_a_loud_warning_naming_the_file(tmp_path, caplog, mode,
                                                                        words):
    """The token and key in it let anyone join as a control plane."""
    path = tmp_path / "join.yaml"
    joinfile.write(str(path), lbsamples.join_info())
    path.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="installer"):
        assert joinfile.load(str(path)) == lbsamples.join_info()
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("{} is {} by group or others (mode {:04o})".format(
        path, words, mode))
    assert "chmod 600 {}".format(path) in record.getMessage()


def test_a_0600_join_yaml_loads_quietly(tmp_path, caplog):
    path = tmp_path / "join.yaml"
    joinfile.write(str(path), lbsamples.join_info())
    with caplog.at_level(logging.WARNING, logger="installer"):
        joinfile.load(str(path))
    assert caplog.records == [] and joinfile.exposure(str(path)) is None


def test_the_clusters_bundle_round_trips_and_older_files_have_none():
    info = lbsamples.join_info()._replace(bundle="e" * 64)
    text = joinfile.dump(info)
    assert 'bundle: "{}"'.format("e" * 64) in text
    assert joinfile.parse(text) == info
    assert joinfile.parse(joinfile.dump(lbsamples.join_info())).bundle is None


def test_the_bundle_server_round_trips_and_older_files_have_none():
    info = lbsamples.join_info()._replace(bundle="e" * 64, bundle_server="10.213.0.11:8447")
    text = joinfile.dump(info)
    assert 'bundle_server: "10.213.0.11:8447"' in text
    assert joinfile.parse(text) == info
    assert joinfile.parse(joinfile.dump(lbsamples.join_info())).bundle_server is None
