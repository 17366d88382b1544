"""The local repo: /etc/yum.repos.d/kubecrate.repo pointing at the unpacked bundle with
gpgcheck=1, the bundled vendor keys imported with `rpm --import`, and the role's packages
installed with only that repo enabled."""

import base64
import hashlib
import os
import re
import struct
from functools import partial
from typing import List, Optional

from installer.format.errors import StepFailed
from installer.render import render
from installer.steps import Action, ActionStep, Context

REPO_FILE = "/etc/yum.repos.d/kubecrate.repo"
ONLY_BUNDLE = ["--disablerepo=*", "--enablerepo=kubecrate"]


def rpm_key_version(armored: str) -> Optional[str]:
    """The version rpm gives the gpg-pubkey package of an armored OpenPGP v4 public key: the
    low 32 bits of its key id, in lower-case hex (RFC 4880 12.2)."""
    lines = armored.strip().splitlines()
    try:
        start = lines.index("") + 1 if "" in lines else 1
    except ValueError:
        return None
    body = "".join(line for line in lines[start:] if not line.startswith(("=", "-----")))
    try:
        data = base64.b64decode(body)
    except ValueError:
        return None
    if len(data) < 3 or not data[0] & 0x80:
        return None
    if data[0] & 0x40:  # new packet format
        tag, first = data[0] & 0x3F, data[1]
        if first < 192:
            length, offset = first, 2
        elif first < 224:
            length, offset = ((first - 192) << 8) + data[2] + 192, 3
        else:
            length, offset = struct.unpack(">I", data[2:6])[0], 6
    else:
        tag, kind = (data[0] >> 2) & 0x0F, data[0] & 0x03
        size = {0: 1, 1: 2, 2: 4}.get(kind)
        if size is None:
            return None
        length = int.from_bytes(data[1:1 + size], "big")
        offset = 1 + size
    packet = data[offset:offset + length]
    if tag != 6 or not packet or packet[0] != 4:
        return None
    fingerprint = hashlib.sha1(b"\x99" + struct.pack(">H", len(packet)) + packet).hexdigest()
    return fingerprint[-8:].lower()


def missing_packages(ctx: Context, specs: List[str]) -> List[str]:
    if not specs:
        return []
    result = ctx.runner.query(["rpm", "-q"] + specs)
    if result.returncode == 0:
        return []
    missing = []
    for line in result.stdout.splitlines():
        found = re.match(r"^package (\S+) is not installed", line)
        if found:
            missing.append(found.group(1))
    return missing or list(specs)


class RepoStep(ActionStep):
    name = "local-repo"
    title = "Local repo from the bundle, vendor keys, the role's packages"

    def actions(self, ctx: Context) -> List[Action]:
        found: List[Action] = []
        base = ctx.bundle_host_dir
        content = render("kubecrate.repo.j2", bundle_name=ctx.info.name, main=[], enabled=0,
                         baseurl="{}/{}".format(base, ctx.info.repo_path),
                         gpgkeys=["{}/{}".format(base, k) for k in ctx.info.gpgkeys])
        if ctx.host.needs_write(REPO_FILE, content.encode("utf-8")) is not None:
            found.append(Action("write " + REPO_FILE,
                                partial(ctx.host.write, REPO_FILE, content)))
        source = ctx.bundle_dir if ctx.unpacked() else (ctx.source_dir or ctx.bundle_dir)
        for key in ctx.info.gpgkeys:
            try:
                with open(os.path.join(source, key), "r") as handle:
                    version = rpm_key_version(handle.read())
            except OSError:
                version = None
            if version and ctx.runner.query(["rpm", "-q", "gpg-pubkey-" + version]
                                            ).returncode == 0:
                continue
            found.append(Action("import GPG key " + key, partial(
                ctx.runner.run, ["rpm", "--import", "{}/{}".format(base, key)])))
        specs = list(ctx.info.packages_for(ctx.node.role))
        missing = missing_packages(ctx, specs)
        if missing:
            found.append(Action("install {} package(s): {}".format(len(missing), " ".join(missing)),
                                partial(install_packages, ctx, specs)))
        return found


def install_packages(ctx: Context, specs: List[str]) -> None:
    """`yum install` from the bundle repo alone, then `rpm -q` of every requested package:
    yum 3 only warns "No package X available." for a name it cannot find and still exits 0
    when it installed the others (yum cli.py installPkgs), so its exit code proves nothing."""
    ctx.runner.run(["yum", "-y"] + ONLY_BUNDLE + ["install"] + specs, timeout=1800)
    if ctx.runner.dry_run:
        return
    still = missing_packages(ctx, specs)
    if still:
        raise StepFailed("yum exited 0 but {} package(s) are not installed: {}".format(
            len(still), " ".join(still)),
            hint="the bundle repo at {}/{} lacks them: check `yum --disablerepo=* "
                 "--enablerepo=kubecrate list {}`, or rebuild the bundle".format(
                     ctx.bundle_host_dir, ctx.info.repo_path, " ".join(still)))
