"""`crictl pull IMAGE` on a test host: the pull a CRI client asks of containerd (the kubelet's
image manager, pkg/kubelet/images/image_manager.go EnsureImageExists, for a pod whose image the
node lacks), made by the real containerd 1.6 of the test.

What containerd's CRI plugin does (containerd docs/hosts.md "CRI"; docs/cri/config.md): with
`config_path` under `[plugins."io.containerd.grpc.v1.cri".registry]` of
/etc/containerd/config.toml, it resolves and fetches an image through the `hosts.toml` of the
image's registry in that folder (`<config_path>/<registry>/hosts.toml`), the same resolver as
`ctr images pull --hosts-dir` (docs/hosts.md "Using Host Namespace Configs with CTR"); without
one it goes to the registry itself, which an air-gapped host cannot reach.

How the lab plays it: `$KUBECRATE_TEST_PULL_CONTAINERD` names the socket of a real containerd
1.6 (scripts/lab/runtimes.py private_containerd) shared by the hosts; the real `ctr` runs in
this host's network namespace (the pull's HTTPS requests leave from the host, as ctr 1.6
resolves and fetches in the client) with `--hosts-dir` on a copy of this root's config_path in
which each `ca = "/..."` names the file under the root (the hosts.toml files are otherwise the
installer's, byte for byte). Each host pulls into its own containerd namespace
(`kc-<root's folder name>`), so one host's pull never satisfies another's. A pulled image is
recorded in the root's containerd store (scripts/lab/hostruntime.py CTR_STORE) with the
manifest digest containerd resolved, as `crictl images` would then list it.

Not modelled: the CRI plugin's pull progress timeout, auth (`[host].header`, credentials),
`skip_verify`, client certificates, mirrors of the old `registry.mirrors` form.
"""

import os
import re
import shutil
import subprocess
import sys

from lab.hostcmd import ROOT, read_json, real, rooted, write_json

PULL_TIMEOUT = 120
CONFIG_PATH = re.compile(r'(?m)^\s*config_path\s*=\s*"([^"]*)"')
CA_LINE = re.compile(r'(?m)^(\s*ca\s*=\s*)"(/[^"]*)"')


def config_path():
    """The CRI plugin's registry config_path in this root's config.toml, or ""."""
    try:
        with open(rooted("/etc/containerd/config.toml")) as handle:
            found = CONFIG_PATH.search(handle.read())
    except OSError:
        return ""
    return found.group(1) if found else ""


def hosts_dir(folder):
    """A copy of this root's `folder` (config_path) whose hosts.toml files name their `ca`
    under the root: the paths a host's containerd reads on its own file system."""
    copy = rooted("/run/kubecrate-standin/certs.d")
    shutil.rmtree(copy, ignore_errors=True)
    source = rooted(folder)
    for registry in sorted(os.listdir(source)) if os.path.isdir(source) else []:
        path = os.path.join(source, registry, "hosts.toml")
        if not os.path.isfile(path):
            continue
        with open(path) as handle:
            text = CA_LINE.sub(lambda m: '{}"{}"'.format(m.group(1), rooted(m.group(2))),
                               handle.read())
        os.makedirs(os.path.join(copy, registry))
        with open(os.path.join(copy, registry, "hosts.toml"), "w") as out:
            out.write(text)
    return copy


def namespace(root):
    """The containerd namespace of the host whose root is `root` (its folder's name: the e2e
    hosts' roots are <host folder>/root)."""
    host = re.sub(r"[^A-Za-z0-9]+", "-", os.path.basename(os.path.dirname(
        os.path.abspath(str(root)))))
    return "kc-" + (host.strip("-") or "host")


def offline(image):
    registry = image.split("/")[0] if "/" in image else "registry-1.docker.io"
    return ('FATA[0000] pulling image: rpc error: code = Unknown desc = failed to pull and '
            'unpack image "{0}": failed to resolve reference "{0}": failed to do request: '
            'Head "https://{1}/v2/": dial tcp: lookup {1}: no such host'.format(image, registry))


def pull(image, store_path):
    """`crictl pull IMAGE`: 0 and the image recorded in the root's store, else 1 with the
    error containerd would give."""
    folder = config_path()
    socket = os.environ.get("KUBECRATE_TEST_PULL_CONTAINERD", "")
    if not folder:
        print(offline(image), file=sys.stderr)
        return 1
    if not socket:
        print("crictl pull: the lab has no containerd for pulls "
              "($KUBECRATE_TEST_PULL_CONTAINERD)", file=sys.stderr)
        return 1
    ctr = [real("ctr"), "-a", socket, "-n", namespace(ROOT)]
    try:
        done = _run(ctr + ["images", "pull", "--hosts-dir", hosts_dir(folder), image],
                    PULL_TIMEOUT)
        listed = _run(ctr + ["images", "ls"], 60) if done.returncode == 0 else done
    except subprocess.TimeoutExpired:
        print("FATA[0120] pulling image: context deadline exceeded", file=sys.stderr)
        return 1
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["ctr exited {}".format(done.returncode)])
        print('FATA[0000] pulling image: rpc error: code = Unknown desc = failed to pull and '
              'unpack image "{}": {}'.format(image, last[-1]), file=sys.stderr)
        return 1
    digest = next((line.split()[2] for line in listed.stdout.splitlines()[1:]
                   if line.split()[:1] == [image]), "")
    images = read_json(rooted(store_path), {})
    images[image] = digest
    write_json(rooted(store_path), images)
    print("Image is up to date for {}".format(digest))
    return 0


def _run(argv, timeout):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
