"""Downloads the way mirrors behave: the mirror sits behind a WAN link of
50 ms RTT, 100 Mbit/s and 0.1% loss, in network namespaces this benchmark makes
(`kcb-fo-mirror` serves, `kcb-fo-client` fetches; 10.213.250.1 and .2 exist only there).

The link is `tc netem` where the kernel has it. This machine's kernel has no
CONFIG_NET_SCH_NETEM, so the fallback is a TUN device in each namespace joined by
benchmarks/linkemu.py (25 ms each way, independent 0.1% losses) with the kernel's `tbf`
shaping each direction to 100 Mbit/s. Both namespaces send with cubic (the kernel default of
the mirrors' CentOS and Debian; this kernel defaults to bbr, which hardly slows down on loss).

Side by side, `runs` times, alternating order, each into an empty folder:
- RPMs (the rpmfetch benchmark's signed RPMs, a subset) from nginx: the builder's `fetch_rpms`
  vs one `curl` fetching them one after another on one connection, and vs `dnf download`.
- Images (the pull benchmark's registry, a subset) from docker-registry: the builder's
  `pull_images` vs `curl` fetching every manifest and blob one after another, and vs
  `skopeo copy` of one image after another.
Goal: <= 0.35x of sequential curl. Needs root.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks import pull, rpmfetch
from benchmarks.timing import Result, rotated

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MIRROR, CLIENT = "kcb-fo-mirror", "kcb-fo-client"
MIRROR_IP, CLIENT_IP = "10.213.250.1", "10.213.250.2"
DELAY, LOSS, RATE = 0.025, 0.001, "100mbit"
RPM_PORT, REGISTRY_PORT = 8080, 5000
GOAL = 0.35
RUNS = 1  # scripts/bench's default: a run is three tools over the slow link, 2.5 min
# a Docker host's closure, scaled down for a 100 Mbit/s link: a few large packages, many small
RPM_SHAPE = [("big", 30_000_000, i) for i in range(3)] + \
    [("small", 500_000, i) for i in range(40)]
IMAGES = ["registry.k8s.io/kube-scheduler:v1.23.17", "registry.k8s.io/coredns/coredns:v1.8.6",
          "docker.io/flannel/flannel-cni-plugin:v1.2.0", "registry.k8s.io/pause:3.6",
          "registry.k8s.io/kube-controller-manager:v1.23.17"]
ALLOWED_CC = "/proc/sys/net/ipv4/tcp_allowed_congestion_control"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def _in(ns: str, argv: list, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", 900)
    return subprocess.run(["ip", "netns", "exec", ns, *map(str, argv)], **kwargs)


class Link:
    """The two namespaces and the emulated WAN link between them; a context manager."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen] = []
        self.how = ""
        self.allowed = ""

    def __enter__(self) -> Link:
        self.down()
        for ns in (MIRROR, CLIENT):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        self.allowed = Path(ALLOWED_CC).read_text().strip()
        if "cubic" not in self.allowed.split():
            Path(ALLOWED_CC).write_text(self.allowed + " cubic\n")
        for ns in (MIRROR, CLIENT):
            _in(ns, ["sysctl", "-q", "net.ipv4.tcp_congestion_control=cubic"], check=True)
        if not self._netem():
            self._emulated()
        return self

    def _netem(self) -> bool:
        _ip("-n", MIRROR, "link", "add", "kcbm", "type", "veth", "peer", "name", "kcbc",
            "netns", CLIENT)
        qdisc = ["root", "netem", "delay", f"{DELAY * 1000:g}ms", "loss", f"{LOSS * 100:g}%",
                 "rate", RATE, "limit", "10000"]
        if _in(MIRROR, ["tc", "qdisc", "add", "dev", "kcbm", *qdisc],
               capture_output=True).returncode != 0:
            _ip("-n", MIRROR, "link", "del", "kcbm", check=False)
            return False
        _in(CLIENT, ["tc", "qdisc", "add", "dev", "kcbc", *qdisc], check=True)
        for ns, dev, ip in ((MIRROR, "kcbm", MIRROR_IP), (CLIENT, "kcbc", CLIENT_IP)):
            _ip("-n", ns, "addr", "add", ip + "/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        self.how = "tc netem"
        return True

    def _emulated(self) -> None:
        for ns, dev, ip, peer in ((MIRROR, "kcbm", MIRROR_IP, CLIENT_IP),
                                  (CLIENT, "kcbc", CLIENT_IP, MIRROR_IP)):
            _ip("-n", ns, "tuntap", "add", "dev", dev, "mode", "tun")
            _ip("-n", ns, "addr", "add", ip, "peer", peer, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _in(ns, ["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", RATE, "burst",
                     "64kb", "latency", "100ms"], check=True)
        log = open(self.work / "linkemu.log", "ab")
        self.procs.append(subprocess.Popen(
            [sys.executable, HERE / "linkemu.py", MIRROR, "kcbm", CLIENT, "kcbc", str(DELAY),
             str(LOSS), "7200"], stdout=log, stderr=log, stdin=subprocess.DEVNULL))
        log.close()
        self.how = ("TUN devices joined by benchmarks/linkemu.py (no netem in this kernel) "
                    "+ tbf")

    def serve(self, key: str, argv: list) -> None:
        log = open(self.work / f"{key}.log", "ab")
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", MIRROR, *map(str, argv)],
                                           stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                           start_new_session=True))
        log.close()

    def wait_for(self, port: int) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            probe = _in(CLIENT, ["curl", "-s", "-o", "/dev/null", "--max-time", "2",
                                 f"http://{MIRROR_IP}:{port}/"], capture_output=True)
            if probe.returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError(f"nothing answers on {MIRROR_IP}:{port}; see {self.work}")

    def down(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs = []
        for ns in (MIRROR, CLIENT):
            _ip("netns", "del", ns, check=False)

    def __exit__(self, *exc: object) -> None:
        self.down()
        if self.allowed:
            Path(ALLOWED_CC).write_text(self.allowed + "\n")


NGINX = """
worker_processes 2;
pid {run}/nginx.pid;
error_log {run}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 30;
    default_type application/octet-stream;
    server {{
        listen {ip}:{port};
        root {www};
        autoindex on;
    }}
}}
"""

FETCH_RPMS = """
import json, sys
import requests
from builder.cache import Cache
from builder.rpm.openpgp import Keyring, read_keys
from builder.rpm.packages import RpmFile, fetch_rpms
job = json.load(open(sys.argv[1]))
ring = {"bench": Keyring(read_keys(job["key"].encode(), "benchmark key"))}
with requests.Session() as session:
    fetch_rpms([RpmFile(*f) for f in job["files"]], ring, Cache(sys.argv[2]), session)
"""


def _rpms(link: Link, work: Path, runs: int) -> list[Result]:
    work.mkdir(parents=True, exist_ok=True)
    www = work / "www"
    rpms, armored = rpmfetch.build(www, work, RPM_SHAPE)
    if not (www / "repodata").exists():
        subprocess.run(["createrepo_c", "--quiet", str(www)], check=True, timeout=300)
    run_dir = work / "nginx"
    run_dir.mkdir(exist_ok=True)
    conf = run_dir / "nginx.conf"
    conf.write_text(NGINX.format(run=run_dir, ip=MIRROR_IP, port=RPM_PORT, www=www))
    link.serve("nginx", ["nginx", "-p", run_dir, "-c", conf, "-g", "daemon off;"])
    link.wait_for(RPM_PORT)
    base = f"http://{MIRROR_IP}:{RPM_PORT}"
    files = [(p.name, f"{base}/Packages/{p.name}", hashlib.sha256(p.read_bytes()).hexdigest(),
              p.stat().st_size, "bench") for p in rpms]
    job = work / "job.json"
    job.write_text(json.dumps({"key": armored.decode(), "files": files}))
    total = sum(f[3] for f in files)
    ours_dir, curl_dir, dnf_dir = work / "cache-ours", work / "out-curl", work / "out-dnf"
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_PROXY": "*", "no_proxy": "*"}

    def reset() -> None:
        for folder in (ours_dir, curl_dir, dnf_dir):
            shutil.rmtree(folder, ignore_errors=True)
        curl_dir.mkdir()
        dnf_dir.mkdir()

    def ours() -> None:
        _in(CLIENT, [sys.executable, "-c", FETCH_RPMS, job, ours_dir], check=True, env=env)

    curl = ["curl", "--silent", "--fail"]
    for name, url, *_ in files:
        curl += ["-o", curl_dir / name, url]

    def peer() -> None:
        _in(CLIENT, curl, check=True, env=env)

    names = [p.name[:-len(".noarch.rpm")] for p in rpms]

    def dnf() -> None:
        _in(CLIENT, ["dnf", "download", "--quiet", "--releasever=7", "--disablerepo=*",
                     f"--repofrompath=bench,{base}", "--enablerepo=bench", "--nogpgcheck",
                     "--setopt=cachedir=" + str(dnf_dir / "cache"), "--destdir", dnf_dir,
                     *names], check=True, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)

    ours_t, curl_t, dnf_t = rotated(runs, [ours, peer, dnf], reset)
    reset()
    mb = total / 1e6
    what = (f"download {len(files)} signed RPMs, {mb:.0f} MB, over 50 ms RTT / 100 Mbit/s / "
            "0.1% loss")
    note = f"link: {link.how}; both sides cubic; the three tools in turn, each run"
    return [
        Result(name=what, ours="fetch_rpms (parallel connections, SHA-256 + signatures)",
               peer="curl -o F1 URL1 -o F2 URL2 ... (sequential, one connection)",
               ours_seconds=ours_t, peer_seconds=curl_t, goal=GOAL, note=note),
        Result(name=what + "; dnf download vs the same curl runs",
               ours="dnf download --repofrompath (dnf 4 defaults, metadata included)",
               peer="curl -o F1 URL1 -o F2 URL2 ... (sequential, one connection)",
               ours_seconds=dnf_t, peer_seconds=curl_t, goal=None,
               note="the peer tool's own ratio, for reference"),
    ]


def _blob_urls(registry: Path, base: str) -> list[tuple[list[str], str]]:
    """(extra curl arguments, URL) for every manifest and blob of IMAGES, read from the
    registry's storage, in pull order."""
    v2 = registry / "storage" / "docker" / "registry" / "v2"
    out = []
    for ref in IMAGES:
        name, tag = ref.rsplit(":", 1)
        repository = name.split("/", 1)[1]
        out.append((["-H", f"Accept: {pull.DOCKER_MANIFEST}"],
                    f"{base}/v2/{repository}/manifests/{tag}"))
        link = v2 / "repositories" / repository / "_manifests" / "tags" / tag / "current" / "link"
        digest = link.read_text().strip()
        path = v2 / "blobs" / "sha256" / digest[7:9] / digest[7:] / "data"
        manifest = json.loads(path.read_text())
        for item in [manifest["config"]] + manifest["layers"]:
            out.append(([], f"{base}/v2/{repository}/blobs/{item['digest']}"))
    return out


def _images(link: Link, work: Path, runs: int) -> list[Result]:
    work.mkdir(parents=True, exist_ok=True)
    registry = REPO / ".cache" / "bench" / "pull" / "registry"
    pull.generate(registry)
    config = work / "registry.yml"
    config.write_text(yaml.safe_dump({
        "version": "0.1", "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(registry / "storage")},
                    "maintenance": {"uploadpurging": {"enabled": False},
                                    "readonly": {"enabled": True}}},
        "http": {"addr": f"{MIRROR_IP}:{REGISTRY_PORT}", "secret": "bench"}}))
    binary = shutil.which("docker-registry") or shutil.which("registry")
    link.serve("registry", [binary, "serve", config])
    link.wait_for(REGISTRY_PORT)
    base = f"http://{MIRROR_IP}:{REGISTRY_PORT}"
    preset = work / "preset.yaml"
    pull.write_preset(preset, base)
    authfile = work / "auth.json"
    authfile.write_text("{}")
    urls = _blob_urls(registry, base)
    cache, curl_dir, archives = work / "cache", work / "out-curl", work / "archives"
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_PROXY": "*", "no_proxy": "*"}

    def reset() -> None:
        for folder in (cache, curl_dir, archives):
            shutil.rmtree(folder, ignore_errors=True)
        curl_dir.mkdir()
        archives.mkdir()

    def ours() -> None:
        _in(CLIENT, [sys.executable, "-c", pull.PULL, preset, cache, *IMAGES], check=True,
            env=env)

    curl = _curl_argv(urls, curl_dir)

    fetched = []  # bytes curl wrote, read right after its run (a later tool's reset empties it)

    def peer() -> None:
        _in(CLIENT, curl, check=True, env=env)
        fetched.append(sum(path.stat().st_size for path in curl_dir.iterdir()))

    host = f"{MIRROR_IP}:{REGISTRY_PORT}"

    def skopeo() -> None:
        for index, ref in enumerate(IMAGES):
            _in(CLIENT, ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--authfile",
                         authfile, f"docker://{host}/{ref.split('/', 1)[1]}",
                         f"docker-archive:{archives}/{index}.tar:{ref}"], check=True, env=env,
                stdout=subprocess.DEVNULL)

    ours_t, curl_t, skopeo_t = rotated(runs, [ours, peer, skopeo], reset)
    size = fetched[-1] / 1e6
    reset()
    what = (f"pull {len(IMAGES)} images ({len(urls)} manifests and blobs, {size:.0f} MB) over "
            "50 ms RTT / 100 Mbit/s / 0.1% loss")
    note = f"link: {link.how}; both sides cubic; the three tools in turn, each run"
    return [
        Result(name=what, ours="pull_images (8 connections, layers over a share in byte "
                            "ranges, digests + diff IDs verified)",
               peer="curl each manifest and blob one after another (one connection)",
               ours_seconds=ours_t, peer_seconds=curl_t, goal=GOAL, note=note),
        Result(name=what + "; skopeo copy vs the same curl runs",
               ours="skopeo copy docker://... docker-archive:N.tar, one image after another",
               peer="curl each manifest and blob one after another (one connection)",
               ours_seconds=skopeo_t, peer_seconds=curl_t, goal=None,
               note="the peer tool's own ratio, for reference"),
    ]


def _curl_argv(urls: list[tuple[list[str], str]], out: Path) -> list[str]:
    """One curl process, one connection: `--next` keeps the Accept header to its manifest."""
    argv = ["curl"]
    for index, (extra, url) in enumerate(urls):
        if index:
            argv.append("--next")
        argv += ["--silent", "--fail", "--location", *extra, "-o", str(out / str(index)), url]
    return argv


def run(work: Path, runs: int) -> list[Result]:
    """The RPM set; the image set is netfetch_images (scripts/bench --only takes either)."""
    work.mkdir(parents=True, exist_ok=True)
    runs = max(1, min(runs, 3))  # each curl run takes about a minute on this link
    with Link(work) as link:
        return _rpms(link, work / "rpms", runs)


def run_images(work: Path, runs: int) -> list[Result]:
    work.mkdir(parents=True, exist_ok=True)
    runs = max(1, min(runs, 3))
    with Link(work) as link:
        return _images(link, work / "images", runs)
