"""The host as the installer sees it: files under --root, and probes of the running kernel.

Every file is read and written under `root` (like `rpm --root`). Writes are atomic (a temporary
file in the same folder, fsync, os.replace); before the first change to a file that existed, its
original is kept once as `<file>.kubecrate-orig`, and the ledger
`<root>/var/lib/kubecrate/host-files.json` remembers which files kubecrate created or changed, so
that `reset --host` can undo exactly that.

Facts that --root cannot redirect (loaded modules, swap, memory, SELinux mode, addresses) come
from Probes, which read /proc and /sys under a probe root: "/" on a real host, and a folder of
fixture files when KUBECRATE_PROBE_ROOT names one (the tests' fake kernel; its stand-ins update
the same files). Listening ports are always probed for real, by binding.
"""

import errno
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import struct
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

from installer.atomic import replace_file
from installer.bundlecache import copy_verified

ORIG_SUFFIX = ".kubecrate-orig"
KUBECRATE_DIR = "/var/lib/kubecrate/"
LEDGER = KUBECRATE_DIR + "host-files.json"
PROBE_ROOT_ENV = "KUBECRATE_PROBE_ROOT"


class FileChange(NamedTuple):
    path: str  # as the host sees it: /etc/hosts
    action: str  # "create" | "update" | "remove"


class Host:
    """Files of one host under `root`. With dry_run nothing is written; the change is returned
    all the same, so `plan` and `--dry-run` can say what would change."""

    def __init__(self, root: str = "/", dry_run: bool = False,
                 probes: Optional["Probes"] = None) -> None:
        self.root = os.path.abspath(root)
        self.dry_run = dry_run
        self.probes = probes or Probes.from_env()

    def path(self, host_path: str) -> str:
        """The real path of `host_path` (absolute, as seen on the host)."""
        if not host_path.startswith("/"):
            raise ValueError("host paths are absolute: {!r}".format(host_path))
        normal = os.path.normpath(host_path)
        if normal.startswith("//"):
            normal = "/" + normal.lstrip("/")
        return self.root if normal == "/" else os.path.join(self.root, normal.lstrip("/"))

    def exists(self, host_path: str) -> bool:
        return os.path.lexists(self.path(host_path))

    def read_bytes(self, host_path: str) -> Optional[bytes]:
        try:
            with open(self.path(host_path), "rb") as handle:
                return handle.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read_text(self, host_path: str) -> Optional[str]:
        data = self.read_bytes(host_path)
        return None if data is None else data.decode("utf-8", "replace")

    def sha256(self, host_path: str) -> Optional[str]:
        try:
            with open(self.path(host_path), "rb") as handle:
                digest = hashlib.sha256()
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
                return digest.hexdigest()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def mode(self, host_path: str) -> Optional[int]:
        try:
            return os.stat(self.path(host_path)).st_mode & 0o7777
        except (FileNotFoundError, NotADirectoryError):
            return None

    def needs_write(self, host_path: str, content: bytes,
                    mode: int = 0o644) -> Optional[FileChange]:
        """The change writing `content` would make, or None when the file already holds it."""
        current = self.read_bytes(host_path)
        if current is None:
            return FileChange(host_path, "create")
        if current != content or self.mode(host_path) != mode:
            return FileChange(host_path, "update")
        return None

    def write(self, host_path: str, content: Union[str, bytes], mode: int = 0o644
              ) -> Optional[FileChange]:
        """Atomically make `host_path` hold `content` (str or bytes); None when it already did."""
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        change = self.needs_write(host_path, data, mode)
        if change is None or self.dry_run:
            return change
        self._remember(host_path, change.action)
        target = self.path(host_path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        replace_file(target, lambda handle: handle.write(data), mode)
        return change

    def copy_in(self, source: str, host_path: str, mode: int = 0o755,
                sha256: Optional[str] = None, what: str = "") -> Optional[FileChange]:
        """Atomically copy the real file `source` to `host_path` unless it holds the same bytes.
        With `sha256` (a bundle cache file's signed digest) the bytes are hashed while copying
        and nothing is renamed into place unless they match (VerificationError, exit 3)."""
        if self.dry_run:
            return FileChange(host_path, "update" if self.exists(host_path) else "create")
        if sha256 is None:
            with open(source, "rb") as handle:
                digest = hashlib.sha256()
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            wanted = digest.hexdigest()
        else:
            wanted = sha256
        if self.sha256(host_path) == wanted and self.mode(host_path) == mode:
            return None
        change = FileChange(host_path, "update" if self.exists(host_path) else "create")
        self._remember(host_path, change.action)
        target = self.path(host_path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        replace_file(target, lambda out: copy_verified(source, wanted, out, what or source), mode)
        return change

    def remove(self, host_path: str) -> Optional[FileChange]:
        if not self.exists(host_path):
            return None
        if not self.dry_run:
            os.unlink(self.path(host_path))
        return FileChange(host_path, "remove")

    # ---------------------------------------------------------------- originals and ledger

    def ledger(self) -> Dict[str, str]:
        """host path -> "created" | "changed" for every file kubecrate wrote."""
        text = self.read_text(LEDGER)
        return json.loads(text) if text else {}

    def _remember(self, host_path: str, action: str) -> None:
        if host_path.startswith(KUBECRATE_DIR):
            return  # kubecrate's own state and cache are not host preparation
        ledger = self.ledger()
        if host_path in ledger:
            return
        if action == "update":
            original = self.path(host_path) + ORIG_SUFFIX
            if not os.path.lexists(original):
                shutil.copy2(self.path(host_path), original)
        ledger[host_path] = "created" if action == "create" else "changed"
        self.write(LEDGER, json.dumps(ledger, indent=1, sort_keys=True) + "\n", 0o600)

    def restore_all(self) -> List[FileChange]:
        """Undo every file change in the ledger: originals back, created files removed."""
        changes = []
        for host_path, how in sorted(self.ledger().items()):
            target = self.path(host_path)
            if how == "changed" and os.path.lexists(target + ORIG_SUFFIX):
                if not self.dry_run:
                    os.replace(target + ORIG_SUFFIX, target)
                changes.append(FileChange(host_path, "update"))
            else:
                change = self.remove(host_path)
                if change:
                    changes.append(change)
        if not self.dry_run:
            _unlink(self.path(LEDGER))
        return changes


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as err:
        if err.errno != errno.ENOENT:
            raise


class Mount(NamedTuple):
    point: str
    fstype: str
    device: str


class Probes:
    """Facts of the running kernel, read under `base` ("/" on a real host)."""

    def __init__(self, base: str = "/") -> None:
        self.base = os.path.abspath(base)

    @classmethod
    def from_env(cls) -> "Probes":
        return cls(os.environ.get(PROBE_ROOT_ENV) or "/")

    def _read(self, path: str) -> Optional[str]:
        try:
            with open(os.path.join(self.base, path.lstrip("/")), "r") as handle:
                return handle.read()
        except OSError:
            return None

    def arch(self) -> str:
        text = self._read("/proc/sys/kernel/arch")
        return text.strip() if text else os.uname().machine

    def kernel(self) -> str:
        text = self._read("/proc/sys/kernel/osrelease")
        return text.strip() if text else os.uname().release

    def cpus(self) -> int:
        text = self._read("/proc/cpuinfo")
        if text is None:
            return os.cpu_count() or 1
        return max(1, len(re.findall(r"^processor\s*:", text, re.M)))

    def memory_mb(self) -> int:
        text = self._read("/proc/meminfo") or ""
        found = re.search(r"^MemTotal:\s+(\d+) kB", text, re.M)
        return int(found.group(1)) // 1024 if found else 0

    def active_swaps(self) -> List[str]:
        lines = (self._read("/proc/swaps") or "").splitlines()[1:]
        return [line.split()[0] for line in lines if line.strip()]

    def loaded_modules(self) -> List[str]:
        text = self._read("/proc/modules") or ""
        return [line.split()[0] for line in text.splitlines() if line.strip()]

    def module_available(self, name: str) -> bool:
        """Loaded, built in, or in modules.dep of the running kernel."""
        if name in self.loaded_modules():
            return True
        kernel = self.kernel()
        for listing in ("modules.builtin", "modules.dep"):
            text = self._read("/lib/modules/{}/{}".format(kernel, listing)) or ""
            if re.search(r"(^|/){}\.ko(\.xz|\.gz|\.zst)?(:|$)".format(re.escape(name)), text,
                         re.M):
                return True
        return False

    def selinux_mode(self) -> str:
        """"enforcing", "permissive" or "disabled" (no selinuxfs)."""
        text = self._read("/sys/fs/selinux/enforce")
        if text is None:
            return "disabled"
        return "enforcing" if text.strip() == "1" else "permissive"

    def sysctl(self, key: str) -> Optional[str]:
        text = self._read("/proc/sys/" + key.replace(".", "/"))
        return None if text is None else text.strip()

    def addresses(self) -> List[str]:
        """The host's own IPv4 addresses, from the kernel's LOCAL routes."""
        text = self._read("/proc/net/fib_trie") or ""
        found: List[str] = []
        last = None
        for line in text.splitlines():
            match = re.match(r"^[\s|`+-]*(\d+\.\d+\.\d+\.\d+)\s*$", line)
            if match:
                last = match.group(1)
            elif "/32 host LOCAL" in line and last and last not in found:
                found.append(last)
        return found

    def routes(self) -> List[Tuple[str, "ipaddress.IPv4Network"]]:
        """(interface, destination network) of the main IPv4 routing table (/proc/net/route:
        hex, little-endian address and mask)."""
        found = []
        for line in (self._read("/proc/net/route") or "").splitlines()[1:]:
            fields = line.split()
            if len(fields) < 8:
                continue
            try:
                dest = socket.inet_ntoa(struct.pack("<I", int(fields[1], 16)))
                mask = socket.inet_ntoa(struct.pack("<I", int(fields[7], 16)))
                found.append((fields[0], ipaddress.IPv4Network("{}/{}".format(dest, mask))))
            except ValueError:
                continue
        return found

    def product_uuid(self) -> Optional[str]:
        text = self._read("/sys/class/dmi/id/product_uuid")
        return text.strip() if text else None

    def mac_addresses(self) -> Dict[str, str]:
        folder = os.path.join(self.base, "sys/class/net")
        macs: Dict[str, str] = {}
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return macs
        for name in names:
            mac = (self._read("/sys/class/net/{}/address".format(name)) or "").strip()
            if mac and mac != "00:00:00:00:00:00":
                macs[name] = mac
        return macs

    def stacked_interfaces(self) -> List[str]:
        """Interfaces that share another's MAC by design: bonds, VLANs and bridges (the
        kernel's DEVTYPE in uevent) and the ports enslaved to a bond or bridge (`master`
        link). The bonding driver gives its ports the bond's MAC; a VLAN takes its parent's
        (kernel Documentation/networking/bonding.rst, 8021q)."""
        found = []
        for name in self.mac_addresses():
            uevent = self._read("/sys/class/net/{}/uevent".format(name)) or ""
            kind = re.search(r"^DEVTYPE=(\w+)", uevent, re.M)
            enslaved = os.path.lexists(os.path.join(self.base, "sys/class/net", name, "master"))
            if enslaved or (kind and kind.group(1) in ("bond", "vlan", "bridge")):
                found.append(name)
        return found

    def mounts(self) -> List[Mount]:
        found = []
        for line in (self._read("/proc/mounts") or "").splitlines():
            parts = line.split()
            if len(parts) >= 3:
                found.append(Mount(parts[1].replace("\\040", " "), parts[2], parts[0]))
        return found

    def mount_of(self, host_path: str) -> Optional[Mount]:
        """The mount holding `host_path` (longest matching mount point)."""
        best = None
        for mount in self.mounts():
            point = mount.point.rstrip("/") or "/"
            if host_path == point or host_path.startswith(point.rstrip("/") + "/") or point == "/":
                if best is None or len(point) > len(best.point.rstrip("/") or "/"):
                    best = mount
        return best

    def port_in_use(self, port: int, address: str = "0.0.0.0") -> bool:
        """True when binding TCP `port` fails because something holds it."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((address, port))
        except OSError as err:
            return err.errno == errno.EADDRINUSE
        finally:
            sock.close()
        return False


def fstab_swaps(text: str) -> List[Tuple[int, str]]:
    """(line index, line) of active swap entries in an fstab."""
    found = []
    for index, line in enumerate(text.splitlines()):
        fields = line.split()
        if fields and not fields[0].startswith("#") and len(fields) >= 3 and fields[2] == "swap":
            found.append((index, line))
    return found
