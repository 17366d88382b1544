"""The mirror world's yum repositories: CentOS 7.9 vault (os, updates, extras) and Docker CE
stable, made of small but real RPMs.

`generate(www, work)` builds every package listed in yum_packages.yaml with `rpmbuild` (tiny
payloads, real names, EVRs and dependencies), signs them with `rpmsign` under a per-vendor test
GPG key (generated once in a private GNUPGHOME under `work`), and writes the repositories under
`www` the way CentOS 7 serves them: `Packages/` plus `createrepo_c` metadata in gzip-compressed
XML with SHA-256 checksums, and a plain comps.xml (`@core`) in the os repo. yum 3 reads neither
zstd metadata nor compressed-only comps, which createrepo_c >= 1.0 would write by default.

`generate(www, work, EL8)` builds the EL8/EL9 slice of yum_el8.yaml the same way, plus what
EL8 and Stream 9 repos have that CentOS 7's do not: modular RPMs (%{modularitylabel}) with a
modules.yaml (modifyrepo_c, xz) naming each stream's artifacts and the default stream, and
repos in createrepo_c >= 1.0's zstd shape (the createrepo_c wheel's own binary: Debian ships
0.17, which cannot write zstd), and aarch64 builds (a repo's `aarch64: twin | also`, see
_aarch64_builds) made with `rpmbuild --target aarch64` (the payloads are text, nothing compiles).

A stamp holding the SHA-256 of every input (the data file, this module, the tools' versions)
makes a warm call return at once. `python3 -m mirrorworld.yum WWW WORK` (in scripts/) runs it.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import yaml

from mirrorworld import yumdata
from mirrorworld.yumdata import DATA, Package, YumWorldError, load

EL8 = yumdata.EL8  # the second data set (world.py generates it when the stage has EL8)
FORMAT = "1"  # bump when the output layout written here changes
SOURCE_DATE_EPOCH = 1700000000  # build times, file mtimes, signature times, repomd revision
KEY_CREATED = "20200101T000000"
TOOLS = ("rpmbuild", "rpmsign", "createrepo_c", "gpg")
EXECUTABLE = re.compile(r"(^|/)s?bin/|^/usr/libexec/")


def _run(argv: list, env: dict | None = None, cwd: pathlib.Path | None = None) -> str:
    """Run a tool (argv list, never a shell); raise YumWorldError with the stderr tail."""
    full_env = dict(os.environ, LC_ALL="C", TZ="UTC", SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH))
    full_env.update(env or {})
    try:
        proc = subprocess.run(argv, env=full_env, cwd=cwd, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as exc:
        raise YumWorldError(f"{argv[0]} timed out after {exc.timeout} s: {' '.join(argv)}")
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-15:])
        raise YumWorldError(f"{argv[0]} failed ({proc.returncode}): {' '.join(argv)}\n{tail}")
    return proc.stdout


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise YumWorldError(f"{name} is not installed: run scripts/setup-dev")
    return path


def _tool_1x(name: str) -> str:
    """createrepo_c/modifyrepo_c >= 1.0 from the createrepo_c wheel (setup.cfg's test extra)."""
    import importlib.util

    spec = importlib.util.find_spec("createrepo_c")
    tool = pathlib.Path(spec.origin).parent / "data" / "bin" / name if spec and spec.origin \
        else None
    if tool is None or not os.access(tool, os.X_OK):
        raise YumWorldError(f"{name} >= 1.0 (the createrepo_c wheel) is not installed: "
                            "run scripts/setup-dev")
    return str(tool)


def _inputs_digest(data: pathlib.Path = DATA) -> str:
    h = hashlib.sha256(FORMAT.encode())
    h.update(data.read_bytes())
    h.update(pathlib.Path(__file__).read_bytes())
    h.update(pathlib.Path(yumdata.__file__).read_bytes())  # what load() makes of the data
    for tool in TOOLS:
        h.update(_run([_tool(tool), "--version"]).splitlines()[0].encode())
    if data != DATA:
        h.update(_run([_tool_1x("createrepo_c"), "--version"]).splitlines()[0].encode())
    return h.hexdigest()


def _spec(pkg: Package, key: dict) -> str:
    lines = [
        "%global debug_package %{nil}",
        "%global __spec_install_post %{nil}",
        f"Name: {pkg.name}",
        *([f"Epoch: {pkg.epoch}"] if pkg.epoch else []),
        f"Version: {pkg.version}",
        f"Release: {pkg.release}",
        f"Summary: {pkg.name} stand-in for the kubecrate mirror world",
        "License: GPLv2",
        "Group: System Environment/Base",
        f"Vendor: {key['vendor']}",
        f"Packager: {key['packager']}",
        "URL: https://example.invalid/kubecrate-mirror-world",
        *(["BuildArch: noarch"] if pkg.arch == "noarch" else []),
        # Payloads are text files: no automatic soname or interpreter dependencies.
        "AutoReqProv: no",
    ]
    tags = {"requires": "Requires", "requires_pre": "Requires(pre)",
            "requires_post": "Requires(post)", "provides": "Provides",
            "obsoletes": "Obsoletes", "conflicts": "Conflicts"}
    for kind, tag in tags.items():
        lines += [f"{tag}: {dep}" for dep in pkg.deps[kind]]
    lines += ["", "%description",
              f"Tiny stand-in for {pkg.name}: the real name, EVR and dependencies, no real code.",
              "", "%install", "mkdir -p %{buildroot}"]
    if pkg.files or pkg.dirs:
        lines.append("cp -a %{_sourcedir}/root/. %{buildroot}/")
    # Scriptlets run chrooted into an install root that has no real shell: Lua needs none.
    for kind, section in (("requires_pre", "%pre"), ("requires_post", "%post")):
        if pkg.deps[kind]:
            lines += ["", f"{section} -p <lua>", "-- nothing to do in the mirror world"]
    lines += ["", "%files", "%defattr(-,root,root,-)"]
    lines += [f"%dir {d}" for d in pkg.dirs]
    lines += [f"%config(noreplace) {f}" if f.startswith("/etc/") else f for f in pkg.files]
    return "\n".join(lines) + "\n"


def _label(pkg: Package, modules: dict) -> str:
    mid, stream = pkg.module.split(":", 1)
    build = modules[mid]["streams"][stream]
    name = modules[mid].get("name", mid)
    return f"{name}:{stream}:{build['version']}:{build['context']}"


def _modules_yaml(world: dict, rid: str) -> bytes:
    """modulemd v2 documents (one per stream with packages in `rid`) and modulemd-defaults."""
    docs = []
    for mid, module in world["modules"].items():
        name = module.get("name", mid)  # one module built for two releases: two ids
        ours = False  # defaults only beside this id's own streams
        for stream, build in module["streams"].items():
            artifacts = sorted(f"{p.name}-{p.epoch}:{p.version}-{p.release}.{p.arch}"
                               for p in world["packages"]
                               if p.repo == rid and p.module == f"{mid}:{stream}")
            if not artifacts:
                continue
            ours = True
            docs.append({"document": "modulemd", "version": 2, "data": {
                "name": name, "stream": str(stream), "version": build["version"],
                "context": build["context"], "arch": "x86_64",
                "summary": f"{name} stand-in for the kubecrate mirror world",
                "description": "Stream of the mirror world's EL8 slice.",
                "license": {"module": ["MIT"]},
                "dependencies": [{"buildrequires": {
                                      "platform": [module.get("platform", "el8.5.0")]},
                                  "requires": {"platform": ["el8"]}}],
                "artifacts": {"rpms": artifacts}}})
        if "default" in module and ours:
            docs.append({"document": "modulemd-defaults", "version": 1,
                         "data": {"module": name, "stream": str(module["default"])}})
    return yaml.safe_dump_all(docs, explicit_start=True, sort_keys=False).encode() + b"...\n"


def _build(pkg: Package, key: dict, top: pathlib.Path, modules: dict) -> pathlib.Path:
    """rpmbuild one package in its own _topdir; return the .rpm."""
    shutil.rmtree(top, ignore_errors=True)
    root = top / "SOURCES" / "root"
    for path in pkg.dirs:
        (root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for path in pkg.files:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        executable = bool(EXECUTABLE.search(path))
        shebang = "#!/bin/sh\n" if executable else ""
        target.write_text(f"{shebang}# kubecrate mirror world: {path} of {pkg.nevra}\n")
        target.chmod(0o755 if executable else 0o644)
    (top / "SPECS").mkdir(parents=True, exist_ok=True)
    spec = top / "SPECS" / f"{pkg.name}.spec"
    spec.write_text(_spec(pkg, key))
    defines = {
        "_topdir": str(top),
        "_binary_payload": "w6.gzdio",  # rpm 4.11 (CentOS 7) reads gzip, and it is fast
        "_build_id_links": "none",
        "_buildhost": "mirror-world.invalid",
        "use_source_date_epoch_as_buildtime": "1",
        "clamp_mtime_to_source_date_epoch": "1",
        "_rpmfilename": "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm",
    }
    argv = [_tool("rpmbuild"), "-bb", "--nodeps", "--quiet",
            "--target", "x86_64" if pkg.arch == "noarch" else pkg.arch]
    if pkg.module:  # what a module build system sets; rpm stores it as %{modularitylabel}
        defines["modularitylabel"] = _label(pkg, modules)
    for name, value in defines.items():
        argv += ["--define", f"{name} {value}"]
    _run(argv + [str(spec)])
    rpm = top / "RPMS" / pkg.filename
    if not rpm.is_file():
        raise YumWorldError(f"rpmbuild did not produce {rpm}")
    return rpm


def _ensure_key(home: pathlib.Path, uid: str) -> str:
    """The fingerprint of the secret key for `uid` in `home`, generating it on first use."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    gpg, env = _tool("gpg"), {"GNUPGHOME": str(home)}

    def fingerprint() -> str | None:
        try:
            out = _run([gpg, "--batch", "--with-colons", "--list-secret-keys", f"={uid}"], env)
        except YumWorldError:
            return None
        return next((ln.split(":")[9] for ln in out.splitlines() if ln.startswith("fpr:")), None)

    fpr = fingerprint()
    if fpr is None:
        _run([gpg, "--batch", "--passphrase", "", "--faked-system-time", KEY_CREATED,
              "--quick-gen-key", uid, "rsa2048", "sign", "never"], env)
        fpr = fingerprint()
    if fpr is None:
        raise YumWorldError(f"gpg did not create a key for {uid}")
    return fpr


def _sign(rpms: list, home: pathlib.Path, fpr: str) -> None:
    """rpmsign with header+payload (v3) and header (v4) signatures, as CentOS 7 RPMs carry;
    a frozen signing time keeps the bytes stable for a given key."""
    defines = {
        "__gpg": _tool("gpg"),
        "_gpg_path": str(home),
        "_gpg_name": fpr,
        "_gpg_digest_algo": "sha256",
        "_gpg_sign_cmd_extra_args": f"--faked-system-time {SOURCE_DATE_EPOCH}!",
    }
    argv = [_tool("rpmsign"), "--addsign", "--rpmv3"]
    for name, value in defines.items():
        argv += ["--define", f"{name} {value}"]
    _run(argv + [str(r) for r in rpms], {"GNUPGHOME": str(home)})


def _comps_xml(comps: dict) -> bytes:
    root = ET.Element("comps")
    for gid, group in comps["groups"].items():
        el = ET.SubElement(root, "group")
        for tag, text in (("id", gid), ("name", group["name"]),
                          ("description", group["description"]), ("default", "true"),
                          ("uservisible", "false")):
            ET.SubElement(el, tag).text = text
        plist = ET.SubElement(el, "packagelist")
        for kind in ("mandatory", "default", "optional"):
            for name in group.get(kind, ()):
                ET.SubElement(plist, "packagereq", type=kind).text = name
    for eid, env in comps.get("environments", {}).items():
        el = ET.SubElement(root, "environment")
        for tag, text in (("id", eid), ("name", env["name"]),
                          ("description", env["description"])):
            ET.SubElement(el, tag).text = text
        glist = ET.SubElement(el, "grouplist")
        for gid in env["groups"]:
            ET.SubElement(glist, "groupid").text = gid
        ET.SubElement(el, "optionlist")
    ET.indent(root)
    head = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
            b'<!DOCTYPE comps PUBLIC "-//CentOS//DTD Comps info//EN" "comps.dtd">\n')
    return head + ET.tostring(root, encoding="utf-8") + b"\n"


def _createrepo(repo_dir: pathlib.Path, comps: pathlib.Path | None, compress: str = "gz",
                modules: pathlib.Path | None = None) -> None:
    # CentOS 7 shape: gzip XML with sha256, plain comps beside a gzip copy, sqlite databases;
    # no zchunk, no zstd (createrepo_c >= 1.0's default, which yum 3 cannot read). CentOS
    # compresses the databases with bzip2; here they are gzip too, which yum 3 also reads.
    # zstd: createrepo_c >= 1.0 with its defaults (zstd XML, comps compressed only, no sqlite).
    argv = [_tool("createrepo_c"), "--quiet", "--checksum=sha256", "--general-compress-type=gz",
            "--database", "--workers=2"] if compress == "gz" else [
        _tool_1x("createrepo_c"), "--quiet", "--workers=2"]
    argv += [f"--revision={SOURCE_DATE_EPOCH}", "--set-timestamp-to-revision"]
    if comps is not None:
        argv += ["--groupfile", str(comps)]
    _run(argv + [str(repo_dir)])
    if modules is not None:  # EL8 AppStream publishes modules.yaml.xz next to gzip XML
        _run([_tool_1x("modifyrepo_c"), "--mdtype=modules", "--compress-type=xz",
              str(modules), str(repo_dir / "repodata")])


def _cached(stamp: pathlib.Path, digest: str, www: pathlib.Path) -> dict | None:
    """The saved result when the inputs are unchanged and the outputs are still in `www`."""
    try:
        saved = json.loads(stamp.read_text())
        result = saved["result"]
        paths = [www / p / "repodata" / "repomd.xml" for p in result["repos"].values()]
        paths += [www / k["path"] for k in result["gpgkeys"].values()]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if saved.get("digest") != digest or not all(p.is_file() for p in paths):
        return None
    return result


def generate(www: pathlib.Path, work: pathlib.Path, data: pathlib.Path = DATA) -> dict:
    """Build, sign and publish the yum repos under `www` (scratch and keys under `work`);
    a no-op while the inputs are unchanged. Returns repo paths and GPG keys relative to `www`:
    {"repos": {id: path}, "gpgkeys": {"centos"|"docker": {"path", "fingerprint"}}}."""
    www, work = pathlib.Path(www).resolve(), pathlib.Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    prefix = "yum" if data == DATA else f"yum-{data.stem}"
    stamp = work / f"{prefix}-stamp.json"
    digest = _inputs_digest(data)
    # Parallel sessions sharing one cache: one builds, the others wait and reuse it.
    with open(work / f".{prefix}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _cached(stamp, digest, www)
        if cached is not None:
            return cached
        stamp.unlink(missing_ok=True)
        result = _generate(load(data), www, work, prefix)
        stamp.write_text(json.dumps({"digest": digest, "result": result}, indent=1))
    return result


def _generate(world: dict, www: pathlib.Path, work: pathlib.Path, prefix: str = "yum") -> dict:
    home = work / "gnupg"
    build, stage = work / f"{prefix}-build", work / f"{prefix}-stage"
    for scratch in (build, stage):
        shutil.rmtree(scratch, ignore_errors=True)
    try:
        fingerprints = {kid: _ensure_key(home, key["uid"]) for kid, key in world["keys"].items()}
        key_of = {rid: world["keys"][repo["key"]] for rid, repo in world["repos"].items()}
        with concurrent.futures.ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 2)) as ex:
            futures = [(pkg, ex.submit(_build, pkg, key_of[pkg.repo], build / f"{i:03d}",
                                       world["modules"]))
                       for i, pkg in enumerate(world["packages"])]
            rpms = [(pkg, fut.result()) for pkg, fut in futures]
        for kid in world["keys"]:
            mine = [rpm for pkg, rpm in rpms if world["repos"][pkg.repo]["key"] == kid]
            _sign(mine, home, fingerprints[kid])
        for rid, repo in world["repos"].items():
            packages_dir = stage / rid / "Packages"
            packages_dir.mkdir(parents=True)
            for pkg, rpm in rpms:
                if pkg.repo == rid:
                    target = packages_dir / pkg.filename
                    shutil.copyfile(rpm, target)
                    os.utime(target, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
            comps = None
            if repo.get("comps"):
                # The names CentOS gives it (repodata/<sha256>-c7-x86_64-comps.xml on 7,
                # <sha256>-comps-BaseOS.x86_64.xml[.zst] on 8 and Stream 9).
                comps = build / "comps" / rid / (
                    "c7-x86_64-comps.xml" if prefix == "yum" else "comps-BaseOS.x86_64.xml")
                comps.parent.mkdir(parents=True, exist_ok=True)
                comps.write_bytes(_comps_xml(world["comps"]))
            modules = None
            if repo.get("modules"):
                modules = build / "modules" / rid / "modules.yaml"
                modules.parent.mkdir(parents=True, exist_ok=True)
                modules.write_bytes(_modules_yaml(world, rid))
            _createrepo(stage / rid, comps, repo.get("compress", "gz"), modules)
        for rid, repo in world["repos"].items():
            target = www / repo["path"]
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(stage / rid, target)
        for kid, key in world["keys"].items():
            armored = _run([_tool("gpg"), "--batch", "--armor", "--export", fingerprints[kid]],
                           {"GNUPGHOME": str(home)})
            for rel in key["publish"]:
                (www / rel).parent.mkdir(parents=True, exist_ok=True)
                (www / rel).write_text(armored)
    finally:
        # gpg starts an agent for the private home; leave no process behind.
        subprocess.run([_tool("gpgconf"), "--kill", "gpg-agent"], env=dict(
            os.environ, GNUPGHOME=str(home)), capture_output=True, check=False, timeout=30)
        for scratch in (build, stage):
            shutil.rmtree(scratch, ignore_errors=True)
    return {
        "repos": {rid: repo["path"] for rid, repo in world["repos"].items()},
        "repo_keys": {rid: repo["key"] for rid, repo in world["repos"].items()},
        "gpgkeys": {kid: {"path": key["publish"][0], "fingerprint": fingerprints[kid]}
                    for kid, key in world["keys"].items()},
    }


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python3 -m mirrorworld.yum WWW WORK  (builds the repos under WWW, "
                 "scratch and keys in WORK)")
    print(json.dumps(generate(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])), indent=1))
