"""`kubecrate why`, in-process, over hand-written repos named by a file:// mirror preset."""

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from builder.cli import cli, main
from installer.format.errors import ExitCode
from tests.rpmrepos import pkg, write_repo

PRESET = """name: test
yum:
{repos}
kubernetes: {{base: "https://dl.k8s.io"}}
releases:
  crictl: {{url: "https://x.invalid/{{version}}/{{arch}}"}}
registries:
  registry.k8s.io: {{url: "https://registry.k8s.io"}}
"""
KEY = '[{url: "file:///k", fingerprint: "6341AB2753D78A78A7C27BB124C6A8A7F4A80EB5"}]'


@pytest.fixture
def preset(tmp_path):
    return write_preset(tmp_path)


def write_preset(tmp_path, base_url=None):
    """The preset of two repos, by file:// URLs, or under `base_url` (an HTTP server's root
    serving tmp_path)."""
    layout = {
        "base": [pkg("bash", "4.2-1", files=["/bin/sh"]), pkg("libfoo", "1-1")],
        "extras": [pkg("app", "2-1", requires=["helper >= 1", "/bin/sh"]),
                   pkg("app", "1-1", requires=["helper >= 1"]),
                   pkg("helper", "1.5-1", requires=["libfoo"])],
    }
    lines = []
    for rid, specs in layout.items():
        root = write_repo(tmp_path / rid, specs,
                          comps={"core": {"mandatory": ["bash"]}} if rid == "base" else None)
        url = f"{base_url}/{rid}" if base_url else root.as_uri()
        lines.append(f"  {rid}: {{baseurl: \"{url}/\", gpgkeys: {KEY}}}")
    path = tmp_path / "preset.yaml"
    path.write_text(PRESET.format(repos="\n".join(lines)))
    return path


def test_why_prints_the_chain(preset):
    out = CliRunner().invoke(cli, ["why", "libfoo", "--mirrors", str(preset), "-p", "app"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines() == [
        "app-2-1.x86_64 (extras): requested as 'app'",
        "  helper-1.5-1.x86_64 (extras): needed by app-2-1.x86_64 for 'helper >= 1'",
        "    libfoo-1-1.x86_64 (base): needed by helper-1.5-1.x86_64 for 'libfoo'",
    ]


def test_why_a_base_package(preset):
    out = CliRunner().invoke(cli, ["why", "bash", "--mirrors", str(preset), "-p", "app-1,bash"])
    assert out.exit_code == 0, out.output
    assert "in the assumed base (@core from base)" in out.output


def test_why_with_no_base_and_repo_subset(preset):
    out = CliRunner().invoke(cli, ["why", "bash", "--mirrors", str(preset), "-p", "app",
                                   "--base", "none", "--repos", "base,extras"])
    assert out.exit_code == 0, out.output
    assert "for '/bin/sh'" in out.output


def test_why_errors_name_the_missing_package(preset, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["why", "app", "--mirrors", str(preset), "-p", "app-3"])
    assert exited.value.code == ExitCode.ERROR
    err = capsys.readouterr().err
    assert "error: no version of app matches 'app-3' (available: 2-1, 1-1)" in err


def test_why_tells_the_mirror_who_asks(tmp_path):
    # `why` reads the repos over the same kind of session as a build: kubecrate's User-Agent.
    agents = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            agents.append(self.headers.get("User-Agent", ""))
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(Handler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        path = write_preset(tmp_path, f"http://127.0.0.1:{server.server_address[1]}")
        out = CliRunner().invoke(cli, ["why", "libfoo", "--mirrors", str(path), "-p", "app"])
    finally:
        server.shutdown()
        server.server_close()
    assert out.exit_code == 0, out.output
    assert agents and all(a.startswith("kubecrate/") for a in agents), agents
