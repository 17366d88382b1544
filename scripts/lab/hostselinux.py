"""The SELinux commands of the host stand-ins (scripts/lab/hoststandins.py): getenforce,
setenforce, getsebool, setsebool, semanage fcontext and restorecon.

The fake kernel's /sys/fs/selinux/enforce holds the mode ("1" enforcing, "0" permissive; no
file: disabled), as the installer's probe reads it. File labels and booleans live beside it
(selinux-labels.json: host path -> type; selinux-booleans.json; selinux-fcontext.json: the
local rules `semanage fcontext -a` added). Refusals follow the real tools: setenforce,
getsebool and setsebool refuse on a disabled host (libselinux utils/setenforce.c, "%s:
SELinux is disabled"; policycoreutils setsebool.c, "setsebool:  SELinux is disabled."), and
setenforce takes only 1, 0, Enforcing or Permissive (any case; else its usage, exit 1);
getsebool and setsebool refuse a boolean the policy lacks (getsebool.c "Error getting active
value for %s"; setsebool "Invalid boolean"), and the booleans start as the policy ships them.
restorecon refuses a missing path ("restorecon: lstat(P) failed: No such file or
directory", as hosts print it) and labels from the policy's file contexts: the few rules
kubecrate's files meet, from selinux-policy keepalived.fc, systemd.fc and files.fc and
container-selinux container.fc.
"""

import os
import re
import sys

from lab.hostcmd import PROBE, ROOT, probe_write, read_json, rooted, write_json

SELINUX_TOOLS = ("getenforce", "setenforce", "setsebool", "getsebool", "semanage", "restorecon")
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
# defaults as the policy ships them (haproxy.te: gen_tunable(haproxy_connect_any, false))
BOOLEANS = {"keepalived_connect_any": 0, "container_manage_cgroup": 0,
            "domain_can_mmap_files": 0, "virt_use_nfs": 0, "haproxy_connect_any": 0}


def _selinux_file(name):
    return os.path.join(PROBE, "sys/fs/selinux", name)


def selinux_enabled():
    return os.path.exists(_selinux_file("enforce"))


def _json_state(name, default):
    return read_json(os.path.join(PROBE, name), default)


def _save_json_state(name, data):
    write_json(os.path.join(PROBE, name), data)


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
    if name == "getsebool":
        # libselinux utils/getsebool.c: "NAME --> on|off", an unknown one refused
        booleans = _json_state("selinux-booleans.json", dict(BOOLEANS))
        status = 0
        for boolean in [a for a in args if not a.startswith("-")]:
            if boolean not in booleans:
                print("Error getting active value for {}".format(boolean), file=sys.stderr)
                status = 1
                continue
            print("{} --> {}".format(boolean, "on" if booleans[boolean] else "off"))
        return status
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
