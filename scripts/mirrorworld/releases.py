"""The mirror world's release-file tree: dl.k8s.io kube binaries and GitHub release tarballs.

The "binaries" are the stand-ins in `standins/` (contract in docs/testing.md), each packed as a
zipapp behind `#!/usr/bin/env python3` with its version and arch baked into `_build.py`. Every
file is written deterministically (fixed timestamps, gzip mtime 0, sorted members), so repeated
generation gives the same bytes and checksums; the work folder keeps an input-hash stamp so a
warm start rewrites nothing.
"""

import gzip
import hashlib
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

STANDINS = Path(__file__).resolve().parent / "standins"
KUBERNETES = ("v1.23.17", "v1.28.15", "v1.30.14", "v1.31.14", "v1.32.9", "v1.33.7")
CRICTL = ("v1.23.0", "v1.28.0", "v1.30.0", "v1.31.0", "v1.32.0", "v1.33.0")
CNI = ("v1.1.1", "v1.3.0", "v1.4.0", "v1.5.1", "v1.6.0", "v1.6.2")
ARCHES = ("amd64", "arm64")
TOOLS = ("kubeadm", "kubelet", "kubectl")
CNI_PLUGINS = ("bandwidth", "bridge", "dhcp", "firewall", "host-device", "host-local", "ipvlan",
               "loopback", "macvlan", "portmap", "ptp", "sbr", "static", "tuning", "vlan", "vrf")
MTIME = 1672531200  # 2023-01-01T00:00:00Z, for every archive member
ZIP_TIME = (2023, 1, 1, 0, 0, 0)
SHEBANG = b"#!/usr/bin/env python3\n"

CRICTL_SCRIPT = '''#!/usr/bin/env python3
"""kubecrate-standin: crictl %(version)s (linux/%(arch)s); no container runtime behind it."""
import sys

args = sys.argv[1:]
if args[:1] in (["--version"], ["-v"]):
    print("crictl version %(version)s")
    sys.exit(0)
sys.stderr.write("crictl stand-in: no CRI runtime is reachable from the mirror world\\n")
sys.exit(1)
'''

CNI_SCRIPT = '''#!/usr/bin/env python3
"""kubecrate-standin: CNI plugin %(name)s %(version)s (linux/%(arch)s)."""
import json
import os
import sys

command = os.environ.get("CNI_COMMAND")
if not command:
    print("CNI %(name)s plugin %(version)s")
elif command == "VERSION":
    print(json.dumps({"cniVersion": "1.0.0",
                      "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0",
                                            "1.0.0"]}))
else:
    print(json.dumps({"cniVersion": "1.0.0", "code": 999,
                      "msg": "stand-in plugin: %(name)s cannot " + command}))
    sys.exit(1)
'''


def generate(www: Path, work: Path) -> dict:
    """Write the release tree under `www` (cached by a stamp in `work`); return the
    versions' folders relative to `www`, by component."""
    www, work = Path(www), Path(work)
    result = {
        "kubernetes": {v: "dl.k8s.io/release/" + v for v in KUBERNETES},
        "crictl": {v: "github.com/kubernetes-sigs/cri-tools/releases/download/" + v
                   for v in CRICTL},
        "cni": {v: "github.com/containernetworking/plugins/releases/download/" + v for v in CNI},
    }
    stamp = work / "releases.stamp"
    digest = _input_hash()
    files = list(_outputs(www))
    if stamp.is_file() and stamp.read_text() == digest and all(p.is_file() for p in files):
        return result
    for version in KUBERNETES:
        for arch in ARCHES:
            folder = www / result["kubernetes"][version] / "bin/linux" / arch
            for tool in TOOLS:
                _write(folder / tool, kube_binary(tool, version, arch), 0o755)
                _write_sums(folder / tool, named=False)
    for version in CRICTL:
        for arch in ARCHES:
            name = "crictl-%s-linux-%s.tar.gz" % (version, arch)
            script = CRICTL_SCRIPT % {"version": version, "arch": arch}
            path = www / result["crictl"][version] / name
            _write(path, _tgz([("crictl", script.encode())]))
            _write_sums(path, named=True)
    for version in CNI:
        for arch in ARCHES:
            name = "cni-plugins-linux-%s-%s.tgz" % (arch, version)
            members = [("./" + p, (CNI_SCRIPT % {"name": p, "version": version, "arch": arch})
                        .encode()) for p in CNI_PLUGINS]
            members += [("./LICENSE", b"Apache License 2.0 (stand-in)\n"),
                        ("./README.md", b"CNI plugins stand-ins for the kubecrate mirror world\n")]
            path = www / result["cni"][version] / name
            _write(path, _tgz(members))
            _write_sums(path, named=True)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest)
    return result


def kube_binary(tool: str, version: str, arch: str) -> bytes:
    """A zipapp running standins/<tool>.py with every stand-in module beside it."""
    buf = io.BytesIO()
    buf.write(SHEBANG)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        entries = {p.name: p.read_bytes() for p in _modules()}
        entries["_build.py"] = ("VERSION = %r\nARCH = %r\nTOOL = %r\n"
                                % (version, arch, tool)).encode()
        entries["__main__.py"] = ("# kubecrate-standin: %s %s linux/%s\nimport sys\n\nfrom %s "
                                  "import main\n\nsys.exit(main(sys.argv[1:]))\n"
                                  % (tool, version, arch, tool)).encode()
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, entries[name])
    return buf.getvalue()


def write_host_tools(dest: Path) -> Path:
    """Put the systemctl stand-in into `dest` (a namespace host's PATH folder); returns it."""
    dest = Path(dest)
    target = dest / "systemctl"
    _write(target, (STANDINS / "systemctl.py").read_bytes(), 0o755)
    return target


def _modules():
    return sorted(p for p in STANDINS.glob("*.py") if p.name != "systemctl.py")


def _input_hash() -> str:
    h = hashlib.sha256()
    for path in _modules() + [STANDINS / "systemctl.py", Path(__file__).resolve()]:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(json.dumps([KUBERNETES, CRICTL, CNI, ARCHES]).encode())
    return h.hexdigest()


def _outputs(www: Path):
    for version in KUBERNETES:
        for arch in ARCHES:
            for tool in TOOLS:
                base = www / "dl.k8s.io/release" / version / "bin/linux" / arch / tool
                yield from (base, base.with_name(tool + ".sha256"),
                            base.with_name(tool + ".sha512"))
    for version in CRICTL:
        for arch in ARCHES:
            yield (www / "github.com/kubernetes-sigs/cri-tools/releases/download" / version
                   / ("crictl-%s-linux-%s.tar.gz.sha256" % (version, arch)))
    for version in CNI:
        for arch in ARCHES:
            yield (www / "github.com/containernetworking/plugins/releases/download" / version
                   / ("cni-plugins-linux-%s-%s.tgz.sha512" % (arch, version)))


def _tgz(members) -> bytes:
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name, data in sorted(members):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), MTIME
                info.mode = 0o644 if name.endswith(("LICENSE", ".md")) else 0o755
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _write_sums(path: Path, named: bool) -> None:
    """dl.k8s.io publishes bare hex digests; GitHub release assets use `<hex>  <file>`."""
    data = path.read_bytes()
    for algo in ("sha256", "sha512"):
        digest = hashlib.new(algo, data).hexdigest()
        text = "%s  %s\n" % (digest, path.name) if named else digest
        _write(path.with_name(path.name + "." + algo), text.encode())
