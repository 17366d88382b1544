"""Challenges, credential lookup and token handling (builder/registry/auth.py) with fakes."""

import json
import subprocess

import pytest

from builder.inputs.mirrors import Credentials
from builder.registry.auth import Authenticator, CredentialFinder, parse_challenges
from builder.registry.errors import RegistryAuthError


def test_parse_challenges():
    [bearer] = parse_challenges('Bearer realm="https://auth.docker.io/token",'
                                'service="registry.docker.io",'
                                'scope="repository:samalba/my-app:pull,push"')
    assert bearer.scheme == "bearer"
    assert bearer.params == {"realm": "https://auth.docker.io/token",
                             "service": "registry.docker.io",
                             "scope": "repository:samalba/my-app:pull,push"}
    basic, other = parse_challenges('Basic realm="a \\"b\\"", Bearer realm=x,service=y')
    assert basic == ("basic", {"realm": 'a "b"'})
    assert other == ("bearer", {"realm": "x", "service": "y"})
    assert parse_challenges("") == []


def write(tmp_path, data):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return Credentials(docker_config=str(path)), path


def test_auths_entry_matches_by_host_and_legacy_keys(tmp_path):
    config, path = write(tmp_path, {"auths": {"https://reg.example:5000/v1/": {
        "auth": "dXNlcjpwYTpzcw=="}}})  # user:pa:ss
    cred = CredentialFinder("reg.example:5000", config).find()
    assert (cred.username, cred.secret) == ("user", "pa:ss")
    assert path.name in cred.source and "pa:ss" not in cred.source
    assert CredentialFinder("other.example", config).find() is None


def test_docker_hub_names_are_one_host(tmp_path):
    config, _ = write(tmp_path, {"auths": {"https://index.docker.io/v1/": {
        "username": "u", "password": "p"}}})
    assert CredentialFinder("registry-1.docker.io", config).find().username == "u"


def test_bad_auth_field_is_an_error(tmp_path):
    config, _ = write(tmp_path, {"auths": {"reg.example": {"auth": "bm9jb2xvbg=="}}})  # nocolon
    with pytest.raises(RegistryAuthError, match="not base64 of user:password"):
        CredentialFinder("reg.example", config).find()


def fake_helper(answers):
    calls = []

    def run(argv, input, **kwargs):
        calls.append((argv[0], input))
        code, out = answers[argv[0]]
        return subprocess.CompletedProcess(argv, code, out, "")

    return run, calls


def test_cred_helpers_win_over_creds_store(tmp_path):
    config, _ = write(tmp_path, {"credsStore": "store", "credHelpers": {"reg.example": "one"}})
    run, calls = fake_helper({
        "docker-credential-one": (0, json.dumps({"Username": "a", "Secret": "b"})),
        "docker-credential-store": (0, json.dumps({"Username": "c", "Secret": "d"}))})
    cred = CredentialFinder("reg.example", config, run=run).find()
    assert cred.username == "a" and "docker-credential-one" in cred.source
    assert calls == [("docker-credential-one", "reg.example")]
    assert CredentialFinder("else.example", config, run=run).find().username == "c"


def test_creds_store_not_found_falls_back_to_auths(tmp_path):
    config, _ = write(tmp_path, {"credsStore": "store",
                                 "auths": {"reg.example": {"auth": "dTpw"}}})  # u:p
    run, _ = fake_helper({"docker-credential-store": (1, "credentials not found in native "
                                                         "keychain\n")})
    assert CredentialFinder("reg.example", config, run=run).find().username == "u"


def test_missing_helper_is_a_clear_error(tmp_path):
    config, _ = write(tmp_path, {"credsStore": "nonexistent-kubecrate-test"})
    with pytest.raises(RegistryAuthError, match="docker-credential-nonexistent-kubecrate-test"):
        CredentialFinder("reg.example", config).find()


def test_environment_credentials(monkeypatch):
    config = Credentials(username_env="U", password_env="P")
    monkeypatch.setenv("U", "me")
    monkeypatch.delenv("P", raising=False)
    with pytest.raises(RegistryAuthError, match=r"\$U and \$P"):
        CredentialFinder("reg.example", config).find()
    monkeypatch.setenv("P", "pw")
    assert CredentialFinder("reg.example", config).find().secret == "pw"


class Response:
    def __init__(self, status, body=None, headers=None):
        self.status_code = status
        self._body = body
        self.headers = headers or {}

    def json(self):
        return self._body


class NoCredentials(CredentialFinder):
    def __init__(self):
        super().__init__("reg.example")

    def find(self):
        return None


def challenge(realm="https://auth.example/token"):
    return Response(401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="svc"'})


def test_anonymous_token_is_fetched_once_per_scope():
    calls = []

    def fetch(method, url, **kwargs):
        calls.append((method, url, kwargs))
        return Response(200, {"access_token": "t1", "expires_in": 300})

    auth = Authenticator("https://reg.example", NoCredentials(), fetch)
    assert auth.header("repository:a:pull") is None
    assert auth.answer(challenge(), "repository:a:pull", None) == "Bearer t1"
    assert auth.header("repository:a:pull") == "Bearer t1"
    assert auth.header("repository:b:pull") is None
    method, url, kwargs = calls[0]
    assert kwargs["params"] == {"scope": "repository:a:pull", "service": "svc"}
    assert "Authorization" not in kwargs["headers"]


def test_refused_token_and_refused_anonymous_access():
    auth = Authenticator("https://reg.example", NoCredentials(),
                         lambda *a, **k: Response(200, {"token": "t"}))
    with pytest.raises(RegistryAuthError, match="refused the bearer token"):
        auth.answer(challenge(), "s", "Bearer t")
    denied = Authenticator("https://reg.example", NoCredentials(),
                           lambda *a, **k: Response(401))
    with pytest.raises(RegistryAuthError, match="none were found") as info:
        denied.answer(challenge(), "s", None)
    assert "docker login reg.example" in info.value.hint


def test_basic_challenge_without_credentials():
    auth = Authenticator("https://reg.example", NoCredentials(), lambda *a, **k: None)
    with pytest.raises(RegistryAuthError, match="needs credentials"):
        auth.answer(Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'}), "s", None)
