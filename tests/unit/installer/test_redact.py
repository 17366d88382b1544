"""Secrets never reach a message or a log (docs/security.md): the runner and the CLI edge pass
everything through installer.format.redact, at any verbosity."""

import logging

import click
import pytest

from installer import joinfile
from installer.format.clikit import configure_logging, run
from installer.format.errors import ExitCode
from installer.format.redact import MASK, redact
from installer.runner import CommandFailed, Runner

TOKEN = "abcdef.0123456789abcdef"
KEY = "0123456789abcdef" * 4
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
# What a failing kubeadm prints (cmd/kubeadm/app/cmd/token.go, phases/init/uploadcerts.go).
NOISY = ("echo '[upload-certs] Using certificate key:'; echo {key}; "
         "echo 'bootstrap token \"{token}\" was not of the form' >&2; "
         "echo '{pem}' >&2; echo 'mirror https://bob:hunter22@mirror.example/' >&2; "
         "exit 3").format(key=KEY, token=TOKEN, pem=PEM)
SECRETS = [TOKEN, "0123456789abcdef0123", "MIIEvQIB", "hunter22"]


def shown(text: str) -> list:
    return [secret for secret in SECRETS if secret in text]


def test_redact_keeps_what_helps_and_removes_the_secrets():
    text = redact("token {} key --certificate-key {}\n{}".format(TOKEN, KEY, PEM))
    assert "abcdef." + MASK in text and "--certificate-key " + MASK in text
    assert "BEGIN PRIVATE KEY----- " + MASK in text and shown(text) == []
    digest = "sha256:" + "5e" * 32  # an unlabelled digest stays: the cache is named by one
    assert redact(digest) == digest


def test_secrets_the_installer_made_are_redacted_anywhere():
    key = joinfile.new_certificate_key()
    assert redact("cached as " + key) == "cached as " + MASK


@pytest.fixture
def noisy(tmp_path):
    """A command that prints secrets (they stay off its own command line, like kubeadm's)."""
    script = tmp_path / "kubeadm-fails"
    script.write_text(NOISY + "\n")
    return ["sh", str(script)]


def test_a_failing_command_shows_no_secret_in_its_error_or_its_debug_log(caplog, noisy):
    with caplog.at_level(logging.DEBUG, logger="installer"):
        with pytest.raises(CommandFailed) as err:
            Runner("/").run(noisy)
    assert err.value.returncode == 3 and "was not of the form" in err.value.message
    assert shown(err.value.message) == [] and shown(err.value.stderr_tail) == []
    assert "Using certificate key" in caplog.text and shown(caplog.text) == []


def test_the_cli_edge_prints_no_secret_at_vv(capfd, noisy):
    @click.group()
    def group():
        pass

    @group.command()
    def fail():
        configure_logging(2)
        made = joinfile.new_certificate_key()  # what the installer makes, it redacts anywhere
        logging.getLogger("installer.test").debug("join with %s and %s", TOKEN, made)
        SECRETS.append(made)
        Runner("/").run(noisy)

    with pytest.raises(SystemExit) as code:
        run(group, ["fail"])
    assert code.value.code == ExitCode.STEP_FAILED
    err = capfd.readouterr().err
    assert "command failed (exit 3)" in err and "abcdef." + MASK in err
    assert "join with abcdef.{} and {}".format(MASK, MASK) in err
    assert shown(err) == [], err


@pytest.mark.parametrize("text, kept, secret", [
    ("    client-key-data: LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCk1IY0NBUUVF",
     "client-key-data: " + MASK, "LS0tLS1CRUdJTiBF"),
    ("users:\n- name: sa\n  user:\n    token: eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.e30.c2ln",
     "token: " + MASK, "eyJhbGciOiJSUzI1NiIs"),
    ('{"token": "s3cr3t-service-token"}', '"token": "' + MASK, "s3cr3t-service-token"),
    ("    auth_pass kcIt01\n", "auth_pass " + MASK, "kcIt01"),
    ("token: abcdef.0123456789abcdef", "token: abcdef." + MASK, "0123456789abcdef"),
])
def test_labelled_secrets_of_configs_are_masked_and_a_token_keeps_its_id(text, kept, secret):
    """What collect-logs copies from a host: kubelet.conf's key data (base64, invisible to the
    PEM pattern), kubeconfig tokens, keepalived.conf's auth_pass."""
    masked = redact(text)
    assert kept in masked and secret not in masked, masked
