"""The mirror world's container registries: the Debian `docker-registry` package (CNCF
distribution 2.8), one process per instance, on 127.0.0.1 with free ports.

`generate(work)` builds the images (images.py, listed in images.yaml), writes distribution's
filesystem storage layout for every instance, a test PKI and an htpasswd file; a stamp with the
hash of the inputs makes a warm call return at once. `start(work, run)` writes the registry
configs under `run`, starts the processes detached, waits until each answers `GET /v2/`, and
returns what a client needs; `stop(info)` ends them.

Instances (images.yaml `instances`): `registry.k8s.io` and `docker.io` (plain HTTP, real
repository paths), `aliyun` (plain HTTP, `google_containers/<name>`, coredns flattened), `auth`
(TLS with a test CA + htpasswd basic auth) and `token` (plain HTTP + bearer tokens from
registry_token.py, anonymous pull allowed like Docker Hub's public repositories). All are
read-only: the world is a mirror, and its storage is a shared cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

import requests
import yaml

from mirrorworld import images as images_mod
from mirrorworld import registry_tls

HERE = pathlib.Path(__file__).parent
FORMAT = "2"  # bump when the storage layout written here changes
USERNAME = "mirror-world"
TOKEN_ISSUER = "mirror-world-token-issuer"
TOKEN_SERVICE = "mirror-world-registry"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
V2 = "docker/registry/v2"

# Processes started by this interpreter, so that stop() can reap them (no zombies, no
# "still running" warnings); stop() also works on pids recorded by another process.
_CHILDREN: dict = {}


class RegistryWorldError(RuntimeError):
    """A registry instance could not be generated or started; the message says which."""


def _inputs_hash(spec_bytes: bytes) -> str:
    h = hashlib.sha256(FORMAT.encode())
    h.update(spec_bytes)
    for name in ("images.py", "registry_tls.py"):
        h.update((HERE / name).read_bytes())
    return h.hexdigest()


def mirror_path(repository: str, instance: dict) -> str:
    """The repository path an instance serves a canonical repository under: a namespace prefix
    and, for flat namespaces like Aliyun's google_containers, only the last path component
    (kubeadm asks a custom imageRepository for `coredns`, not `coredns/coredns`)."""
    namespace = instance.get("namespace")
    if not namespace:
        return repository
    name = repository.rsplit("/", 1)[-1] if instance.get("flatten") else repository
    return f"{namespace}/{name}"


def _link(path: pathlib.Path, digest: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(digest)


def _write_storage(root: pathlib.Path, blob_dir: pathlib.Path, served: list) -> None:
    """distribution's filesystem layout (registry/storage/paths.go): blobs by digest, and per
    repository the links that make them visible there; `served` is [(Image, path)]."""
    needed = set()
    for image, path in served:
        repo = root / V2 / "repositories" / path
        for digest in image.blobs:
            _link(repo / "_layers" / "sha256" / digest[7:] / "link", digest)
            needed.add(digest)
        for digest in [image.digest] + [m["digest"] for m in image.manifests.values()]:
            _link(repo / "_manifests" / "revisions" / "sha256" / digest[7:] / "link", digest)
            needed.add(digest)
        tag = repo / "_manifests" / "tags" / image.tag
        _link(tag / "current" / "link", image.digest)
        _link(tag / "index" / "sha256" / image.digest[7:] / "link", image.digest)
    for digest in sorted(needed):
        hexd = digest[7:]
        dest = root / V2 / "blobs" / "sha256" / hexd[:2] / hexd / "data"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(blob_dir / hexd, dest)


def _htpasswd(path: pathlib.Path, password: str) -> None:
    # distribution accepts bcrypt entries only. Cost 5 (the floor is 4): the registry checks
    # the password on every request, and the default cost 10 would add ~50 ms to each blob.
    tool = shutil.which("htpasswd")
    if tool is None:
        raise RegistryWorldError("htpasswd is not installed (Debian apache2-utils): "
                                 "run scripts/setup-dev")
    out = subprocess.run([tool, "-nbB", "-C", "5", USERNAME, password], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    path.write_text(out.strip() + "\n")


def _build(root: pathlib.Path, spec: dict, stamp: str) -> dict:
    built, blobs = images_mod.build(spec)
    blob_dir = root / "blobs"
    blob_dir.mkdir(parents=True)
    for digest, data in blobs.items():
        (blob_dir / digest[7:]).write_bytes(data)
    storage, paths = {}, {}
    for name, inst in spec["instances"].items():
        served = [(im, mirror_path(im.repository, inst)) for im in built
                  if im.registry in inst["registries"]]
        storage[name] = str(root / "storage" / name)
        _write_storage(root / "storage" / name, blob_dir, served)
        paths[name] = {im.ref: f"{path}:{im.tag}" for im, path in served}
    pki = registry_tls.make_pki(root / "tls")
    password = secrets.token_urlsafe(12)
    (root / "auth").mkdir()
    _htpasswd(root / "auth" / "htpasswd", password)
    return {
        "stamp": stamp,
        "storage": storage,
        "paths": paths,
        "mirrors": {n: {"namespace": i["namespace"], "flatten": bool(i.get("flatten"))}
                    for n, i in spec["instances"].items() if i.get("namespace")},
        "images": [im._asdict() for im in built],
        "pki": pki,
        "htpasswd": str(root / "auth" / "htpasswd"),
        "username": USERNAME,
        "password": password,
    }


def generate(work: pathlib.Path) -> dict:
    """Build the images and every instance's registry storage under `work/registry`, reusing
    them while images.yaml and the generators are unchanged. Returns a description (storage
    folders, per-instance paths, image digests, PKI paths, credentials)."""
    work = pathlib.Path(work)
    root = work / "registry"
    spec_bytes = images_mod.SPEC_PATH.read_bytes()
    stamp = _inputs_hash(spec_bytes)
    cached = _cached(root, stamp)
    if cached is not None:
        return cached
    work.mkdir(parents=True, exist_ok=True)
    # Parallel test sessions may share one cache: one builds, the others wait and reuse it.
    with open(work / ".registry.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _cached(root, stamp)
        if cached is not None:
            return cached
        tmp = work / f".registry.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            result = _build(tmp, yaml.safe_load(spec_bytes), stamp)
            # Paths point into the final folder once it is renamed into place.
            text = json.dumps(result, indent=1, sort_keys=True).replace(str(tmp), str(root))
            (tmp / "generated.json").write_text(text)
            shutil.rmtree(root, ignore_errors=True)
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return json.loads((root / "generated.json").read_text())


def _cached(root: pathlib.Path, stamp: str) -> dict | None:
    try:
        cached = json.loads((root / "generated.json").read_text())
    except (OSError, ValueError):
        return None
    return cached if cached.get("stamp") == stamp else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _registry_config(name: str, port: int, storage: str, gen: dict, token_port: int) -> dict:
    config = {
        "version": "0.1",
        "log": {"level": "info", "formatter": "text", "fields": {"instance": name}},
        "storage": {
            "filesystem": {"rootdirectory": storage},
            "cache": {"blobdescriptor": "inmemory"},
            "delete": {"enabled": False},
            "maintenance": {"uploadpurging": {"enabled": False}, "readonly": {"enabled": True}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16),
                 "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }
    if name == "auth":
        config["http"]["tls"] = {"certificate": gen["pki"]["server_cert"],
                                 "key": gen["pki"]["server_key"]}
        config["auth"] = {"htpasswd": {"realm": "mirror-world", "path": gen["htpasswd"]}}
    elif name == "token":
        config["auth"] = {"token": {"realm": f"http://127.0.0.1:{token_port}/token",
                                    "service": TOKEN_SERVICE, "issuer": TOKEN_ISSUER,
                                    "rootcertbundle": gen["pki"]["signer_cert"]}}
    return config


def _spawn(argv: list, log: pathlib.Path) -> int:
    # Detached (own session) so that a terminal's Ctrl-C does not reach the world, and with a
    # bare environment so that REGISTRY_* variables cannot override the config file.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, env=env, close_fds=True)
    _CHILDREN[proc.pid] = proc
    return proc.pid


def _wait_ready(url: str, verify, deadline: float) -> bool:
    with requests.Session() as session:
        session.trust_env = False
        while time.monotonic() < deadline:
            try:
                status = session.get(url + "/v2/", timeout=2, verify=verify).status_code
                if status in (200, 401):
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.1)
    return False


def _tail(path: pathlib.Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(work: pathlib.Path, run: pathlib.Path) -> dict:
    """Start every instance (configs and logs under `run`), wait until each answers
    `GET /v2/`, and return {"instances": {name: {"url", "pid", ...}}, "images": [refs],
    "pids": [every pid]}. Raises RegistryWorldError (after stopping what it started) when an
    instance does not come up within START_TIMEOUT seconds."""
    gen = generate(work)
    run = pathlib.Path(run)
    run.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if binary is None:
        raise RegistryWorldError("docker-registry is not installed: run scripts/setup-dev")
    info = {"instances": {}, "images": [im["ref"] for im in gen["images"]], "pids": []}
    waits = []
    try:
        for name, storage in gen["storage"].items():
            port = _free_port()
            token_port = _free_port() if name == "token" else 0
            config_path = run / f"registry-{name}.yml"
            config_path.write_text(yaml.safe_dump(
                _registry_config(name, port, storage, gen, token_port), sort_keys=False))
            scheme = "https" if name == "auth" else "http"
            entry = {"url": f"{scheme}://127.0.0.1:{port}", "config": str(config_path),
                     "log": str(run / f"registry-{name}.log"), "paths": gen["paths"][name]}
            entry.update(gen["mirrors"].get(name, {}))
            info["instances"][name] = entry
            if name == "token":
                token_config = run / "token-server.json"
                token_config.write_text(json.dumps({
                    "port": token_port, "issuer": TOKEN_ISSUER, "service": TOKEN_SERVICE,
                    "signer_key": gen["pki"]["signer_key"],
                    "signer_cert": gen["pki"]["signer_cert"],
                    "username": gen["username"], "password": gen["password"]}))
                entry.update({
                    "token_url": f"http://127.0.0.1:{token_port}/token",
                    "token_config": str(token_config), "service": TOKEN_SERVICE,
                    "username": gen["username"], "password": gen["password"],
                    "token_pid": _spawn([sys.executable, str(HERE / "registry_token.py"),
                                         str(token_config)], run / "token-server.log"),
                })
                info["pids"].append(entry["token_pid"])
            if name == "auth":
                entry.update({"ca": gen["pki"]["ca"], "cert_dir": gen["pki"]["cert_dir"],
                              "username": gen["username"], "password": gen["password"]})
            entry["pid"] = _spawn([binary, "serve", str(config_path)], pathlib.Path(entry["log"]))
            info["pids"].append(entry["pid"])
            waits.append((name, entry))
        deadline = time.monotonic() + START_TIMEOUT
        for name, entry in waits:
            verify = entry.get("ca", True)
            if not _wait_ready(entry["url"], verify, deadline):
                raise RegistryWorldError(
                    f"registry {name} did not answer GET {entry['url']}/v2/ within "
                    f"{START_TIMEOUT:.0f} s; its log ends:\n{_tail(pathlib.Path(entry['log']))}")
    except BaseException:
        stop(info)
        raise
    return info


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _ours(pid: int, marker: str) -> bool:
    """Whether `pid` still runs the command we started (its argv names our config file), so
    that a recycled pid is never signalled."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker.encode() in f.read()
    except OSError:
        return False


def stop(info: dict) -> None:
    """Terminate the processes `start` returned: SIGTERM, a bounded wait, then SIGKILL."""
    targets = []
    for entry in info.get("instances", {}).values():
        for key, marker in (("pid", "config"), ("token_pid", "token_config")):
            if entry.get(key) and _ours(entry[key], entry.get(marker, "\0")):
                targets.append(entry[key])
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in targets:
            if _alive(pid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(_alive(p) for p in targets) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not any(_alive(p) for p in targets):
            break
    for pid in info.get("pids", []):
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            try:
                child.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
