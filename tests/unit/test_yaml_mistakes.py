"""One YAML reader, one exit code: an unknown key, a wrong type and a key given twice are
reported the same way in a recipe, a mirror preset and a cluster.yaml, by both CLIs:

    error: <file>:<line>: <key path>: <what is wrong>
    hint: <what to do>

and exit 2 (usage; the README's exit-code table). Recipes and presets are read by `kubecrate`
only (lock, build, why, lint --recipe); cluster.yaml by both `kubecrate lint --cluster` and the
installer (preflight, plan, install)."""

import shutil
from pathlib import Path

import pytest
from lab.bundles import make_key

from builder import cli as builder_cli
from installer import cli as installer_cli
from installer.format.errors import ExitCode

TOP = Path(__file__).resolve().parents[2]
CLUSTER = """\
cluster_name: prod
control_plane:
  vip: 192.168.10.100
  dns_name: cluster-endpoint
networking:
  pod_cidr: 10.244.0.0/16
nodes:
  - {name: cp1, address: 192.168.10.11, role: control-plane}
load_balancer: {interface: eth0, auth_pass: k8sVIP42}
"""
# file kind -> (its text, a mapping section, a string key in it, where the schema is described)
KINDS = {
    "recipe": ((TOP / "manifests/k8s-1.23.17-el7.yaml").read_text(), "target", "arch",
               "docs/recipe.md"),
    "preset": ((TOP / "manifests/mirrors/upstream.yaml").read_text(), "kubernetes", "base",
               "docs/mirrors.md"),
    "cluster": (CLUSTER, "control_plane", "dns_name", "docs/cluster.md"),
}


def spoil(text, section, key, mistake):
    """(the spoilt text, the line of the mistake, its key path, the message, a hint part)."""
    lines = text.splitlines(keepends=True)
    at = lines.index(section + ":\n")
    kline = next(i for i in range(at + 1, len(lines)) if lines[i].startswith("  " + key + ":"))
    if mistake == "unknown key":
        lines.insert(at + 1, "  colour: blue\n")
        return (lines, at + 2, section + ".colour", "unknown key", "allowed here: ")
    if mistake == "wrong type":
        value = lines[kline].split(":", 1)[1].split("#")[0].strip()
        lines[kline] = "  {}: [{}]\n".format(key, value)
        return (lines, kline + 1, section + "." + key,
                "must be a non-empty string, not list", "write a string here")
    lines.insert(kline + 1, lines[kline])
    return (lines, kline + 2, section + "." + key,
            "key given twice (YAML keeps only the last one)",
            "keep one of them: the first is at line {}".format(kline + 1))


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    top = tmp_path_factory.mktemp("yaml-mistakes")
    _, _, public = make_key(top / "keys")
    (top / "k8s.tar").write_bytes(b"")  # never opened: the YAML file is read first
    recipe = top / "recipe.yaml"
    preset = top / "preset.yaml"
    shutil.copy(str(TOP / "manifests/k8s-1.23.17-el7.yaml"), str(recipe))
    shutil.copy(str(TOP / "manifests/mirrors/upstream.yaml"), str(preset))
    return {"top": top, "public": public, "recipe": recipe, "preset": preset}


def run(capfd, main, argv):
    with pytest.raises(SystemExit) as done:
        main(argv)
    return done.value.code, capfd.readouterr().err


CASES = [(kind, mistake, cli) for kind in KINDS
         for mistake in ("unknown key", "wrong type", "key given twice")
         for cli in (("kubecrate", "installer") if kind == "cluster" else ("kubecrate",))]


@pytest.mark.parametrize("kind, mistake, cli", CASES)
def test_the_same_mistake_reads_the_same_in_every_file_and_cli(kit, tmp_path, capfd, kind,
                                                               mistake, cli):
    text, section, key, guide = KINDS[kind]
    lines, line, path, message, hint = spoil(text, section, key, mistake)
    spoilt = tmp_path / "{}.yaml".format(kind)
    spoilt.write_text("".join(lines))
    if kind == "recipe":
        argv = ["lock", str(spoilt), "--mirrors", str(kit["preset"])]
    elif kind == "preset":
        argv = ["lock", str(kit["recipe"]), "--mirrors", str(spoilt)]
    elif cli == "kubecrate":
        argv = ["lint", str(kit["top"] / "k8s.tar"), "--cluster", str(spoilt)]
    else:
        argv = ["preflight", "--bundle", str(kit["top"] / "k8s.tar"), "--cluster", str(spoilt),
                "--key", str(kit["public"]), "--root", str(tmp_path / "root")]
    main = builder_cli.main if cli == "kubecrate" else installer_cli.main
    code, err = run(capfd, main, argv)
    assert code == ExitCode.USAGE, err
    first, _, rest = err.partition("\n")
    assert first == "error: {}:{}: {}: {}".format(spoilt, line, path, message), err
    assert rest.startswith("hint: ") and hint in rest.splitlines()[0], err
    if mistake == "wrong type":
        assert guide in rest.splitlines()[0], err
