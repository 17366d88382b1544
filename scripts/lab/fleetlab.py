"""A fleet of namespace hosts driven through Ansible over real SSH (docs/fleet.md), shared by
the fleet e2e test (tests/e2e/test_fleet_install.py) and scripts/benchmarks/fleet.py.

Each node is a lab.halab Node (its own --root, stand-ins, CPython 3.6 as python3)
plus a real sshd (Debian's openssh-server) listening on the node's address inside its
namespace, with a host key and a client key generated for this run. The control node is one
more namespace host on the same bridge that runs the project's ansible-playbook (ansible-core
2.14-2.16) with the interpreter of every host set to the real CPython 3.6.15. What the
playbook copies and runs lands under each node's root: host_vars/<node>.yml points
kubecrate_root, kubecrate_dir and the environment the installer runs with there (the same
environment halab's Node.pyz gives it). Processes are the lab's; its teardown ends them.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import yaml

from lab import halab, py36
from lab.netns import Lab
from lab.tools import require_tool

VENV_BIN = Path(sys.executable).parent  # ansible-playbook comes with the test extra
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)"
                   r"\s+skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)", re.M)
SSHD_CONFIG = """\
ListenAddress {address}
Port 22
HostKey {host_key}
PidFile {folder}/sshd.pid
AuthorizedKeysFile {folder}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
Subsystem sftp internal-sftp
"""


def names(workers: int, control_planes: int = 3) -> List[str]:
    return ["cp{}".format(i + 1) for i in range(control_planes)] + \
           ["w{}".format(i + 1) for i in range(workers)]


def keygen(path: Path) -> str:
    """A fresh ed25519 key pair at `path` (+ .pub); returns the public line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kubecrate-fleet",
                    "-f", str(path)], check=True, timeout=30, capture_output=True)
    return (path.parent / (path.name + ".pub")).read_text().strip()


class Fleet:
    """The nodes of `lab` (all hosts but the last, which is the control node), each with an
    sshd that trusts `client_key`."""

    def __init__(self, lab: Lab, core: Path, shiv_root: Path, subnet: int,
                 folder: Path) -> None:
        require_tool("sshd")
        require_tool("ssh-keygen")
        self.lab = lab
        self.folder = folder
        self.control = lab.hosts[-1]
        node_hosts = lab.hosts[:-1]
        cluster = halab.cluster_yaml(subnet, "services", [h.name for h in node_hosts], "",
                                     {h.name: int(h.address.rsplit(".", 1)[1])
                                      for h in node_hosts})
        self.cluster = folder / "cluster.yaml"
        folder.mkdir(parents=True, exist_ok=True)
        self.cluster.write_text(cluster)
        self.nodes = {h.name: halab.Node(h, core, shiv_root, subnet, {}, cluster)
                      for h in node_hosts}
        self.client_key = folder / "id_ed25519"
        self.known_hosts = folder / "known_hosts"
        self.python = py36.python36()

    def start_sshd(self) -> None:
        """sshd on every node's address, its host key in known_hosts, the client key in its
        authorized_keys."""
        public = keygen(self.client_key)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation
        known = []
        for node in self.nodes.values():
            folder = node.host.dir / "sshd"
            folder.mkdir(exist_ok=True)
            host_public = keygen(folder / "host_key")
            known.append("{} {}".format(node.host.address, " ".join(host_public.split()[:2])))
            (folder / "authorized_keys").write_text(public + "\n")
            (folder / "sshd_config").write_text(SSHD_CONFIG.format(
                address=node.host.address, host_key=folder / "host_key", folder=folder))
        self.known_hosts.write_text("\n".join(known) + "\n")
        for name in self.nodes:
            self.start_sshd_on(name)

    def start_sshd_on(self, name: str) -> None:
        """(Re)start `name`'s sshd; bounded wait until it logs that it listens."""
        host = self.nodes[name].host
        (host.dir / "sshd.log").write_text("")
        host.start("sshd", [require_tool("sshd"), "-D", "-e", "-f",
                            host.dir / "sshd" / "sshd_config"])
        deadline = time.monotonic() + 20
        while "Server listening" not in host.log("sshd"):
            if time.monotonic() > deadline:
                raise RuntimeError("sshd on {} did not start: {}".format(name, host.log("sshd")))
            time.sleep(0.1)

    def export(self, built: Path, out: Path, *extra: object) -> subprocess.CompletedProcess:
        """`kubecrate-installer.pyz fleet export` on the control node (CPython 3.6 first on
        PATH, as the .pyz's preamble finds it)."""
        python_dir = py36.python3_dir(self.folder / "python")
        env = {"PATH": "{}:{}".format(python_dir, os.environ["PATH"]), "LANG": "C.UTF-8"}
        argv = ["env", "-i"] + ["{}={}".format(k, v) for k, v in sorted(env.items())] + [
            built / "kubecrate-installer.pyz", "fleet", "export", "--cluster", self.cluster,
            "--bundle", built / (halab.NAME + ".tar"), "--out", out] + list(extra)
        return self.control.run(argv, timeout=120, check=False)

    def host_vars(self, out: Path) -> None:
        """host_vars/<node>.yml: the interpreter (CPython 3.6.15), and where the node's root,
        uploads and installer environment are in this lab."""
        folder = out / "host_vars"
        folder.mkdir(exist_ok=True)
        passed = {k: v for k, v in os.environ.items() if k.startswith("KUBECRATE_")}
        for name, node in self.nodes.items():
            env = dict(passed, **node.env)
            env.update(KUBECRATE_ROOT=str(node.root),
                       PATH="{}:{}".format(node.python_dir, node.env["PATH"]),
                       # the first control plane's bundle server runs (installer/bundleserve.py)
                       KUBECRATE_SYSTEMCTL_RUN=node.env["KUBECRATE_SYSTEMCTL_RUN"]
                       + ",kubecrate-bundle-server")
            (folder / (name + ".yml")).write_text(yaml.safe_dump({
                "ansible_python_interpreter": str(self.python),
                "ansible_remote_tmp": str(node.host.dir / "ansible-tmp"),
                "kubecrate_root": str(node.root),
                "kubecrate_dir": str(node.root / "var/tmp/kubecrate"),
                "kubecrate_environment": env,
            }, default_flow_style=False))

    def playbook(self, out: Path, *args: str, key: Optional[Path] = None,
                 timeout: float = 1800) -> subprocess.CompletedProcess:
        """ansible-playbook site.yml in `out`, on the control node, as root with the test's
        client key (or `key`)."""
        home = self.folder / "ansible"
        env = dict(os.environ, **self.ansible_env(home, key or self.client_key))
        return subprocess.run(self.control.argv(
            [VENV_BIN / "ansible-playbook", "site.yml"] + list(args)), cwd=str(out), env=env,
            capture_output=True, text=True, timeout=timeout)

    def ansible_env(self, home: Path, key: Path) -> Dict[str, str]:
        (home / "cp").mkdir(parents=True, exist_ok=True)
        return {"ANSIBLE_HOME": str(home), "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
                "ANSIBLE_REMOTE_USER": "root", "ANSIBLE_PRIVATE_KEY_FILE": str(key),
                "ANSIBLE_SSH_CONTROL_PATH_DIR": str(home / "cp"),
                "ANSIBLE_SSH_ARGS": "-F /dev/null -o UserKnownHostsFile={} "
                                    "-o StrictHostKeyChecking=yes -o ConnectTimeout=5 "
                                    "-o ControlMaster=auto -o ControlPersist=60s".format(
                                        self.known_hosts),
                "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}


def recap(stdout: str) -> Dict[str, Dict[str, int]]:
    """PLAY RECAP: host -> {ok, changed, unreachable, failed, skipped, rescued, ignored}."""
    keys = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
    return {m.group(1): dict(zip(keys, (int(g) for g in m.groups()[1:])))
            for m in RECAP.finditer(stdout)}


def failures(stdout: str) -> Dict[str, str]:
    """host -> its `fatal: [host]: FAILED! => {...}` / `UNREACHABLE!` lines, joined."""
    found = {}  # type: Dict[str, str]
    for match in re.finditer(r"^fatal: \[([^\]]+)\]: (.*)$", stdout, re.M):
        found[match.group(1)] = found.get(match.group(1), "") + match.group(2) + "\n"
    return found


def task_results(stdout: str, task: str) -> Dict[str, str]:
    """host -> ok/changed/skipping/failed under every `TASK [task]` header of the output."""
    found = {}  # type: Dict[str, str]
    for section in stdout.split("TASK [")[1:]:
        if section.startswith(task + "]"):
            for match in re.finditer(r"^(ok|changed|skipping|fatal): \[([^\]]+)\]", section,
                                     re.M):
                found[match.group(2)] = match.group(1)
    return found


def installed(nodes: Mapping[str, "halab.Node"], names: Sequence[str]) -> List[str]:
    """Which of `names` have a state.json (the installer changed something there)."""
    return [n for n in names if (nodes[n].root / "var/lib/kubecrate/state.json").exists()]

