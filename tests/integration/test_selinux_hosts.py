"""`selinux: enforcing` (docs/selinux.md) on the parts the worker install and the HA lab do not
reach: the host's keepalived in services mode, whose check script must carry the label
keepalived_t may execute, and the SELinux stand-ins themselves (scripts/lab/hoststandins.py),
which refuse what the real tools refuse.

The load balancer's write action runs for real under a --root: the files are written, the real
`haproxy -c` checks haproxy.cfg, and `restorecon` is the stand-in, which records each label
from the policy's file contexts in the fake kernel (selinux-labels.json)."""

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from lab import lbsamples
from lab.hostworld import STANDIN_NAMES, STANDINS
from lab.tools import require_tool

from installer import lbconfig
from installer.host import Host, Probes
from installer.runner import Runner
from installer.steps import loadbalancer

pytestmark = pytest.mark.integration


@pytest.fixture
def standin_env(tmp_path, monkeypatch):
    """The stand-ins first on PATH, an enforcing fake kernel, empty unit state."""
    require_tool("haproxy")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in STANDIN_NAMES:
        (bindir / name).symlink_to(STANDINS)
    kernel = tmp_path / "kernel"
    (kernel / "sys/fs/selinux").mkdir(parents=True)
    (kernel / "sys/fs/selinux/enforce").write_text("1\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / "units.json").write_text(json.dumps(
        {"active": [], "enabled": [], "ports": [], "protocols": []}))
    monkeypatch.setenv("PATH", "{}:{}".format(bindir, os.environ["PATH"]))
    monkeypatch.setenv("KUBECRATE_PROBE_ROOT", str(kernel))
    monkeypatch.setenv("KUBECRATE_STANDIN_STATE", str(state))
    monkeypatch.setenv("KUBECRATE_STANDIN_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.delenv("KUBECRATE_ROOT", raising=False)
    return SimpleNamespace(top=tmp_path, kernel=kernel, root=tmp_path / "root",
                           env=dict(os.environ))


def labels(env) -> dict:
    path = env.kernel / "selinux-labels.json"
    return json.loads(path.read_text()) if path.exists() else {}


def run_writes(env, enforcing: bool, mode: str = "services") -> None:
    env.root.mkdir(exist_ok=True)
    ctx = SimpleNamespace(
        host=Host(str(env.root), probes=Probes(str(env.kernel))), runner=Runner(str(env.root)),
        cluster=SimpleNamespace(load_balancer=lbsamples.load_balancer(mode),
                                enforcing=enforcing, images_mode="archive"),
        node=SimpleNamespace(name="cp2", is_control_plane=True), info=SimpleNamespace(release="7"))
    writes = [a for a in loadbalancer.bring_up(ctx) if a.what.startswith("write ")]
    assert len(writes) == 1
    writes[0].do()


def test_enforcing_puts_the_check_script_where_keepalived_t_may_run_it(standin_env):
    env = standin_env
    run_writes(env, enforcing=True)
    script = env.root / lbconfig.ENFORCING_CHECK_SCRIPT.lstrip("/")
    assert script.is_file() and script.stat().st_mode & 0o777 == 0o755
    assert not (env.root / lbconfig.CHECK_SCRIPT.lstrip("/")).exists()
    conf = (env.root / lbconfig.KEEPALIVED_CONF.lstrip("/")).read_text()
    assert 'script "{}"'.format(lbconfig.ENFORCING_CHECK_SCRIPT) in conf
    assert labels(env) == {lbconfig.LIBEXEC_DIR: lbconfig.SCRIPT_LABEL,
                           lbconfig.ENFORCING_CHECK_SCRIPT: lbconfig.SCRIPT_LABEL}
    assert (env.kernel / "sys/fs/selinux/enforce").read_text() == "1\n"


def test_permissive_keeps_the_runbooks_path_and_relabels_nothing(standin_env):
    env = standin_env
    run_writes(env, enforcing=False)
    assert (env.root / lbconfig.CHECK_SCRIPT.lstrip("/")).is_file()
    assert not (env.root / lbconfig.LIBEXEC_DIR.lstrip("/")).exists()
    assert labels(env) == {}


def test_static_pods_run_as_spc_t_only_when_enforcing(standin_env):
    import yaml

    env = standin_env
    run_writes(env, enforcing=True, mode="static-pods")
    for name in ("keepalived", "haproxy"):
        pod = yaml.safe_load((env.root / "etc/kubernetes/manifests" / (name + ".yaml"))
                             .read_text())
        assert pod["spec"]["securityContext"] == {"seLinuxOptions": {"type": "spc_t"}}, name
    assert labels(env) == {}  # the script runs inside the container (spc_t), not keepalived_t
    for item in lbconfig.static_pod_files(lbsamples.load_balancer("static-pods")):
        assert "seLinuxOptions" not in item.content


def run(env, *argv):
    return subprocess.run(list(argv), env=env.env, capture_output=True, text=True, timeout=30)


def test_selinux_standins_refuse_what_the_real_tools_refuse(standin_env):
    env = standin_env
    assert run(env, "getenforce").stdout == "Enforcing\n"
    assert run(env, "setenforce", "Permissive").returncode == 0
    assert run(env, "getenforce").stdout == "Permissive\n"
    usage = run(env, "setenforce", "2")
    assert usage.returncode == 1 and "usage:" in usage.stderr
    missing = run(env, "restorecon", "-v", str(env.top / "nowhere"))
    assert missing.returncode != 0
    assert "restorecon: lstat({}) failed: No such file or directory".format(
        env.top / "nowhere") in missing.stderr
    assert run(env, "setsebool", "-P", "keepalived_connect_any", "1").returncode == 0
    unknown = run(env, "setsebool", "no_such_boolean", "1")
    assert unknown.returncode == 1 and "Invalid boolean" in unknown.stderr
    unknown = run(env, "getsebool", "no_such_boolean")
    assert unknown.returncode == 1 and \
        "Error getting active value for no_such_boolean" in unknown.stderr
    rule = run(env, "semanage", "fcontext", "-a", "-t", "container_file_t", "/srv/x(/.*)?")
    assert rule.returncode == 0
    again = run(env, "semanage", "fcontext", "-a", "-t", "container_file_t", "/srv/x(/.*)?")
    assert again.returncode == 1 and "already defined" in again.stderr
    (env.kernel / "sys/fs/selinux/enforce").unlink()  # SELinux disabled
    assert run(env, "getenforce").stdout == "Disabled\n"
    for argv, message in ((("setenforce", "1"), "setenforce: SELinux is disabled"),
                          (("setsebool", "keepalived_connect_any", "1"),
                           "setsebool:  SELinux is disabled.")):
        refused = run(env, *argv)
        assert refused.returncode == 1 and message in refused.stderr, argv
    assert Path(env.kernel / "selinux-booleans.json").exists()


def test_enforcing_lets_the_hosts_haproxy_reach_the_apiservers(standin_env):
    """Under enforcing, haproxy_t connects only to a few port types; the apiservers' 6443 is
    unreserved_port_t, so haproxy_connect_any (off as the policy ships it) must be on in
    services mode, or every backend is DOWN. Only there: permissive hosts and static pods
    (spc_t) need no boolean. A second pass has nothing to do."""
    env = standin_env

    def boolean_actions(enforcing, mode="services"):
        ctx = SimpleNamespace(
            host=Host(str(env.root), probes=Probes(str(env.kernel))),
            runner=Runner(str(env.root)),
            cluster=SimpleNamespace(load_balancer=lbsamples.load_balancer(mode),
                                    enforcing=enforcing, images_mode="archive"),
            node=SimpleNamespace(name="cp2", is_control_plane=True),
            info=SimpleNamespace(release="7"))
        return [a for a in loadbalancer.bring_up(ctx) if a.what.startswith("setsebool")]

    env.root.mkdir(exist_ok=True)
    assert run(env, "getsebool", "haproxy_connect_any").stdout == \
        "haproxy_connect_any --> off\n"
    assert boolean_actions(False) == [] and boolean_actions(True, "static-pods") == []
    actions = boolean_actions(True)
    assert [a.what for a in actions] == \
        ["setsebool -P haproxy_connect_any 1 (haproxy_t may connect to the apiservers' port)"]
    actions[0].do()
    assert run(env, "getsebool", "haproxy_connect_any").stdout == \
        "haproxy_connect_any --> on\n"
    assert boolean_actions(True) == []
