"""The mirror world's orchestrator: `up` / `down` with real nginx, the presets it writes, and
what the world serves. The first test drives the orchestrator with small fake generators so
that its lifecycle is checked on its own; the others run the real world."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from mirrorworld import nginx, world

from builder.inputs.mirrors import load_preset

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- fakes


class FakeTree:
    """yum and releases stand-ins: write the paths the real generators write, count calls."""

    def __init__(self):
        self.calls = {"yum": 0, "releases": 0}

    def yum(self):
        fake = self

        class Yum:
            @staticmethod
            def generate(www, work):
                fake.calls["yum"] += 1
                repos = {}
                for rid, rel in (
                    ("base", "vault.centos.org/7.9.2009/os/x86_64"),
                    ("docker-ce-stable", "download.docker.com/linux/centos/7/x86_64/stable"),
                ):
                    (www / rel / "repodata").mkdir(parents=True, exist_ok=True)
                    (www / rel / "repodata" / "repomd.xml").write_text("<repomd/>\n")
                    repos[rid] = rel
                (www / "keys").mkdir(exist_ok=True)
                (www / "keys" / "centos.asc").write_text("key\n")
                return {
                    "repos": repos,
                    "gpgkeys": {
                        "centos": {"path": "keys/centos.asc", "fingerprint": "A" * 40},
                        "docker": {
                            "path": str(www / "keys" / "centos.asc"),
                            "fingerprint": "B" * 40,
                        },
                    },
                }

        return Yum

    def releases(self):
        fake = self

        class Releases:
            @staticmethod
            def generate(www, work):
                fake.calls["releases"] += 1
                tree = www / "dl.k8s.io/release/v1.23.17/bin/linux/amd64"
                tree.mkdir(parents=True, exist_ok=True)
                (tree / "kubeadm").write_bytes(bytes(range(256)) * 64)
                return {"kubernetes": {"v1.23.17": "dl.k8s.io/release/v1.23.17"}}

        return Releases


class FakeRegistry:
    """One plain-HTTP "registry" (python -m http.server) per canonical host, plus aliyun."""

    children = {}

    @staticmethod
    def generate(work):
        (work / "registry").mkdir(exist_ok=True)
        return {}

    @classmethod
    def start(cls, work, run):
        info = {"instances": {}, "images": []}
        for name in ("registry.k8s.io", "docker.io", "aliyun"):
            port = nginx._free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                cwd=run,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            cls.children[proc.pid] = proc
            info["instances"][name] = {"url": f"http://127.0.0.1:{port}", "pid": proc.pid}
            assert nginx._wait(lambda p=port: nginx.port_open(p), 10)
        info["instances"]["aliyun"]["namespace"] = "google_containers"
        return info

    @classmethod
    def stop(cls, info):
        for entry in info["instances"].values():
            proc = cls.children.pop(entry["pid"], None)
            if proc:
                proc.terminate()
                proc.wait(timeout=10)


def test_orchestrator_lifecycle_with_fake_stages(tmp_path):
    fake = FakeTree()
    stages = {"yum": fake.yum(), "releases": fake.releases(), "registry": FakeRegistry}
    paths = world.Paths(cache=tmp_path / "cache", run=tmp_path / "run")
    said = []
    state = world.up(paths, say=said.append, stages=stages)
    try:
        assert fake.calls == {"yum": 1, "releases": 1}
        assert any("(generated)" in line for line in said)
        procs = world.processes(state)
        assert len(procs) == 4 and all(nginx.alive(p["pid"]) for p in procs)
        assert all(nginx.port_open(p["port"]) for p in procs)

        preset = load_preset(state["presets"]["default"])
        assert preset.repo("base").gpgkeys[0].fingerprint == "A" * 40
        assert (
            preset.repo("docker-ce-stable").gpgkeys[0].url == f"{state['base_url']}/keys/centos.asc"
        )
        assert (
            requests.get(preset.yum_url("base", "repodata/repomd.xml"), timeout=5).text
            == "<repomd/>\n"
        )
        kubeadm = requests.get(
            preset.kubernetes.binary_url("v1.23.17", "amd64", "kubeadm"), timeout=5
        )
        assert kubeadm.status_code == 200 and len(kubeadm.content) == 256 * 64
        aliyun = load_preset(state["presets"]["aliyun"])
        ref = aliyun.pull_ref("registry.k8s.io/coredns/coredns:v1.8.6")
        assert ref.repository == "google_containers/coredns"
        assert ref.mirror.url == state["registry"]["instances"]["aliyun"]["url"]

        again = []
        assert world.up(paths, say=again.append, stages=stages)["nginx"] == state["nginx"]
        assert "already up" in again[0]
    finally:
        world.down(paths, say=said.append, stages=stages)
    assert not paths.run.exists()
    assert not any(nginx.alive(p["pid"]) for p in procs)
    assert not any(nginx.port_open(p["port"]) for p in procs)

    # warm: nothing regenerated while the inputs and outputs are unchanged
    warm = []
    world.up(paths, say=warm.append, stages=stages)
    world.down(paths, say=warm.append, stages=stages)
    assert fake.calls == {"yum": 1, "releases": 1}
    assert sum("(cached)" in line for line in warm) >= 2


def test_down_kills_an_nginx_that_ignores_quit(tmp_path, monkeypatch):
    monkeypatch.setattr(nginx, "STOP_TIMEOUT", 1.0)
    (tmp_path / "www").mkdir()
    info = nginx.start_nginx(tmp_path / "www", tmp_path / "run")
    os.kill(info["pid"], signal.SIGSTOP)  # a wedged master: QUIT and TERM do nothing
    began = time.monotonic()
    nginx.stop_nginx(info)
    assert not nginx.alive(info["pid"])
    assert not nginx.port_open(info["port"])
    assert time.monotonic() - began < 3 * nginx.STOP_TIMEOUT + 5


# --------------------------------------------------------------------------- the real world


def run_cli(*args, env=None, timeout=900):
    return subprocess.run(
        [str(REPO / "scripts" / "mirror-world"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.timeout(1200)
def test_up_then_down_leaves_nothing_behind(tmp_path):
    env = {"KUBECRATE_MW_RUN": str(tmp_path / "run")}
    done = run_cli("up", env=env)
    assert done.returncode == 0, done.stderr
    assert "total" in done.stderr
    state_path = tmp_path / "run" / "state.json"
    state = json.loads(state_path.read_text())
    try:
        procs = world.processes(state)
        assert {"nginx", "registry registry.k8s.io", "registry docker.io", "registry aliyun"} <= {
            p["name"] for p in procs
        }
        assert all(nginx.alive(p["pid"]) for p in procs)
        assert all(nginx.port_open(p["port"]) for p in procs if p["port"])
        for path in state["presets"].values():
            load_preset(path)

        again = run_cli("up", env=env, timeout=120)
        assert again.returncode == 0 and "already up" in again.stderr
        exported = run_cli("env", env=env, timeout=60)
        assert f"export KUBECRATE_MW_STATE={state_path}" in exported.stdout
        assert "export KUBECRATE_MW_PRESET=" in exported.stdout
        shown = run_cli("status", "--json", env=env, timeout=60)
        assert shown.returncode == 0 and json.loads(shown.stdout)["up"] is True
    finally:
        stopped = run_cli("down", env=env, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(nginx.alive(p["pid"]) for p in procs)
    assert not any(nginx.port_open(p["port"]) for p in procs if p["port"])
    assert not (tmp_path / "run").exists()
    assert run_cli("status", env=env, timeout=60).returncode == 1


def test_world_preset_loads_and_maps_images(mirror_world):
    preset = load_preset(mirror_world.preset)
    assert preset.kubernetes.base.startswith(mirror_world.base_url)
    ref = preset.pull_ref("registry.k8s.io/coredns/coredns:v1.8.6")
    assert ref.mirror.url == mirror_world.registries["registry.k8s.io"]
    aliyun = load_preset(mirror_world.preset_aliyun)
    flat = aliyun.pull_ref("registry.k8s.io/coredns/coredns:v1.8.6")
    assert flat.reference.endswith("/google_containers/coredns:v1.8.6")
    # the aliyun registry really serves the flattened path
    manifest = requests.get(
        flat.manifest_url,
        timeout=10,
        headers={
            "Accept": "application/vnd.oci.image.index.v1+json, "
            "application/vnd.docker.distribution.manifest.list.v2+json"
        },
    )
    assert manifest.status_code == 200, manifest.text


def test_every_repo_has_repomd(mirror_world):
    preset = load_preset(mirror_world.preset)
    assert {"base", "updates", "extras", "docker-ce-stable"} <= set(preset.yum)
    for repo_id in preset.yum:
        reply = requests.get(preset.yum_url(repo_id, "repodata/repomd.xml"), timeout=10)
        assert reply.status_code == 200, (repo_id, reply.status_code)
        assert b"<repomd" in reply.content
        key = requests.get(preset.repo(repo_id).gpgkeys[0].url, timeout=10)
        assert key.status_code == 200 and b"PGP PUBLIC KEY" in key.content


def test_kube_binary_and_its_checksum(mirror_world):
    preset = load_preset(mirror_world.preset)
    binary = requests.get(preset.kubernetes.binary_url("v1.23.17", "amd64", "kubeadm"), timeout=10)
    assert binary.status_code == 200 and binary.content
    digest = requests.get(
        preset.kubernetes.checksum_url("v1.23.17", "amd64", "kubeadm"), timeout=10
    )
    assert digest.status_code == 200
    assert digest.text.split()[0] == hashlib.sha256(binary.content).hexdigest()


def test_nginx_honours_range(mirror_world):
    preset = load_preset(mirror_world.preset)
    url = preset.kubernetes.binary_url("v1.23.17", "amd64", "kubeadm")
    whole = requests.get(url, timeout=10).content
    assert len(whole) > 20
    part = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(whole)}"
    assert part.content == whole[10:20]
    tail = requests.get(url, headers={"Range": f"bytes={len(whole) - 5}-"}, timeout=10)
    assert tail.status_code == 206 and tail.content == whole[-5:]


def test_release_templates_reach_every_generated_tarball(mirror_world):
    preset = load_preset(mirror_world.preset)
    for name in ("crictl", "cni"):
        versions = mirror_world.state["releases"][name]
        assert versions, name
        for version in versions:
            for arch in ("amd64", "arm64"):
                url = preset.release_url(name, version, arch)
                assert requests.head(url, timeout=10).status_code == 200, url
