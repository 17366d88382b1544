"""`kubecrate`: the builder's command line. Thin: parse, call one core function, map errors."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import click

from builder import __version__
from builder import zipapp as zipapp_core
from builder.bundle import keys
from builder.bundle.pack import pack as pack_bundle
from builder.errors import BuildError, UsageError
from installer.format import bundle, minisig
from installer.format.clikit import configure_logging, run
from installer.format.errors import EXIT_CODES_HELP

HELP = """Build signed offline Kubernetes bundles for air-gapped RHEL-family hosts.

\b
  kubecrate keygen --out keys/
  kubecrate pack staging/ --out bundles/x.tar --key keys/kubecrate.key
  kubecrate verify bundles/x.tar --key keys/kubecrate.pub
  kubecrate zipapp --out bundles/kubecrate-installer.pyz --key keys/kubecrate.key
  kubecrate lock manifests/k8s-1.23.17-el7.yaml [--check]
  kubecrate build manifests/k8s-1.23.17-el7.yaml --key keys/kubecrate.key --out bundles/
  kubecrate lint bundles/k8s-1.23.17-el7.tar; kubecrate inspect bundles/k8s-1.23.17-el7.tar

""" + EXIT_CODES_HELP

verbose_option = click.option("-v", "--verbose", count=True, help="More diagnostics.")


@click.group(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kubecrate")
def cli() -> None:
    pass


@cli.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for kubecrate.key (mode 0600) and kubecrate.pub.")
@click.option("--force", is_flag=True, help="Overwrite an existing key pair.")
@verbose_option
def keygen(out_dir: Path, force: bool, verbose: int) -> None:
    """Create an Ed25519 signing key pair in minisign's formats.

    kubecrate.key is unencrypted, exactly as `minisign -G -W` writes it: keep it on the build
    workstation. kubecrate.pub goes into every installer and to the hosts' operators, who can
    also check bundles with `minisign -Vm X.tar -p kubecrate.pub`.
    """
    configure_logging(verbose)
    secret, public = keys.write_keypair(out_dir, force)
    key = minisig.load_public_key(str(public))
    click.echo(f"wrote {secret} and {public} (key id {key.id_hex})", err=True)
    click.echo(public.read_text().splitlines()[1])


def load_signing_key(path: Path) -> keys.SecretKey:
    return keys.load_secret_key(path, lambda: getpass.getpass(f"Passphrase for {path}: "))


def rotation_options(func):
    """--rotate-from and --old-key-expires (docs/security.md, "Rotating the signing key")."""
    func = click.option(
        "--old-key-expires", "old_key_expires", metavar="YYYY-MM-DD",
        help="With --rotate-from: the day (UTC) from which hosts refuse bundles signed only "
             "by the old key.")(func)
    func = click.option(
        "--rotate-from", "rotate_from", metavar="OLD.key",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Key rotation: the old secret key. It signs the installer, which trusts --key's "
             "public half and, until --old-key-expires, the old one.")(func)
    return func


def load_rotation(rotate_from: Path | None, expires: str | None):
    """The Rotation the two options ask for, or None; both or neither must be given."""
    from builder.bundle.rotation import Rotation, parse_expiry

    if rotate_from is None and expires is None:
        return None
    if rotate_from is None or expires is None:
        raise UsageError("--rotate-from and --old-key-expires go together",
                         hint="a key rotation names the old secret key and the day hosts stop "
                              "trusting it")
    day = parse_expiry(expires)
    return Rotation(load_signing_key(rotate_from), day)


@cli.command()
@click.argument("source", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Bundle file to write, e.g. bundles/k8s.tar; X.tar.minisig goes beside it.")
@click.option("--key", "key_path", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="minisign secret key (kubecrate keygen, or minisign -G).")
@click.option("--compress", type=click.Choice(["none", "gzip"]), default="none",
              show_default=True, help="The payload is mostly compressed already.")
@click.option("--comment", help="Extra text for the signed trusted comment.")
@click.option("--name", help="Bundle name [default: the file name without .tar].")
@click.option("--metadata", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="JSON object merged into bundle.json (target, roles, components...).")
@verbose_option
def pack(source: Path, out: Path, key_path: Path, compress: str, comment: str | None,
         name: str | None, metadata: Path | None, verbose: int) -> None:
    """Pack the folder SOURCE into a deterministic, signed bundle (plumbing under `build`).

    Set SOURCE_DATE_EPOCH for reproducible output: the same folder then gives the same bytes
    whatever the files' mtimes, owners or the umask.
    """
    configure_logging(verbose)
    extra = None
    if metadata:
        try:
            extra = json.loads(metadata.read_text(encoding="utf-8"))
        except ValueError as err:
            raise UsageError(f"{metadata}: not valid JSON ({err})") from None
        if not isinstance(extra, dict):
            raise UsageError(f"{metadata}: must hold a JSON object")
    key = load_signing_key(key_path)
    from tqdm import tqdm

    with tqdm(unit="B", unit_scale=True, desc="pack", disable=None, leave=False) as bar:
        result = pack_bundle(source, out, key, name=name,
                             compress=None if compress == "none" else compress,
                             comment=comment, metadata=extra, progress=bar.update)
    click.echo(f"wrote {result.path} ({result.size} bytes, {result.files} files) and "
               f"{result.signature_path}", err=True)
    click.echo(f"trusted comment: {result.trusted_comment}", err=True)
    click.echo(result.manifest_sha256)


@cli.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False),
              help="minisign public key to trust.")
@click.option("--signature", "signature_path", type=click.Path(dir_okay=False),
              help="Signature file [default: BUNDLE.minisig].")
@verbose_option
def verify(bundle_path: str, key_path: str, signature_path: str | None, verbose: int) -> None:
    """Check BUNDLE's signature, then every member against bundle.json (as hosts do)."""
    configure_logging(verbose)
    checked = bundle.verify(bundle_path, minisig.load_public_key(key_path), signature_path)
    click.echo(f"verified {checked.manifest.name}: {len(checked.manifest.files)} files, "
               f"signed by key {minisig.key_id_hex(checked.signature.key_id)}", err=True)
    click.echo(f"trusted comment: {checked.signature.trusted_comment}", err=True)
    click.echo(checked.manifest_sha256)


@cli.command("zipapp")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bundles") / zipapp_core.INSTALLER_NAME, show_default=True,
              help="The installer to write; OUT.minisig goes beside it when --key is given.")
@click.option("--key", "key_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="minisign secret key: signs the .pyz, and its public half is embedded.")
@click.option("--pubkey", "pubkey_path",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Public key to embed [default: the --key's]. Without --key: unsigned.")
@rotation_options
@verbose_option
def zipapp_cmd(out: Path, key_path: Path | None, pubkey_path: Path | None,
               rotate_from: Path | None, old_key_expires: str | None, verbose: int) -> None:
    """Build the single-file installer for the hosts (plumbing under `build`).

    Runs on Python 3.6+, with a sh preamble that installs python3 from --bundle on CentOS 7
    minimal hosts. Pinned wheels come from the cache; only the first build needs PyPI. Set
    SOURCE_DATE_EPOCH to fix its timestamps: the same inputs then give the same bytes.
    """
    configure_logging(verbose)
    rotation = load_rotation(rotate_from, old_key_expires)
    secret = load_signing_key(key_path) if key_path else None
    if pubkey_path:
        public_text = pubkey_path.read_text(encoding="utf-8")
    elif secret is not None:
        public_text = secret.public_key.to_file_text()
    else:
        raise UsageError("the installer embeds the builder's public key: pass --key or --pubkey")
    if rotation is not None:
        secret = rotation.old_key  # hosts that trust the old key check the new installer
    result = zipapp_core.build_zipapp(out, public_text, secret, rotation=rotation)
    signed = f"signed: {result.signature_path}" if result.signature_path else "UNSIGNED"
    click.echo(f"wrote {result.path} ({result.size} bytes, {result.members} members, trusts key "
               f"{result.public_key_id}, {signed}, {len(result.downloaded)} wheels downloaded)",
               err=True)
    click.echo(result.sha256)


@cli.command()
@click.argument("package")
@click.option("--recipe", "recipe_path",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Take the requests, repos, base, arch and preset from this recipe.")
@click.option("--mirrors", "preset_path",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Mirror preset (docs/mirrors.md) whose yum repos are searched "
                   "[default with --recipe: the recipe's].")
@click.option("-p", "--packages", "requested", multiple=True,
              help="What the bundle asks for: a name, name-version[-release], or a provide such "
                   "as /usr/bin/python3. Repeat the option or separate with commas.")
@click.option("--repos", help="Comma-separated repo ids to search [default: all in the preset].")
@click.option("--base", default="@core", show_default=True,
              help="Assumed-installed base: @GROUP of the base repo's comps, none, or a file "
                   "of `rpm -qa` output from a real host.")
@click.option("--arch", default="x86_64", show_default=True, help="Target architecture.")
@verbose_option
def why(package: str, recipe_path: Path | None, preset_path: Path | None, requested: tuple,
        repos: str | None, base: str, arch: str, verbose: int) -> None:
    """Explain why PACKAGE is in the RPM closure: the chain of requires from a request.

    \b
      kubecrate why fuse3-libs --mirrors manifests/mirrors/upstream.yaml \\
          -p docker-ce-20.10.24,keepalived,haproxy,conntrack-tools,socat,python3
      kubecrate why fuse3-libs --recipe manifests/k8s-1.23.17-el7.yaml
    """
    from builder.inputs.mirrors import load_preset
    from builder.net.http import new_session
    from builder.rpm.base import resolve_from_preset
    from builder.rpm.resolve import explain

    configure_logging(verbose)
    wanted = [item.strip() for text in requested for item in text.split(",") if item.strip()]
    repo_ids = [r.strip() for r in repos.split(",")] if repos else None
    platform = None
    if recipe_path is not None:
        from builder.inputs.lock import request_text
        from builder.inputs.recipefile import load_recipe

        recipe = load_recipe(recipe_path)
        wanted = wanted or [request_text(spec) for spec in recipe.all_packages()]
        preset_path = preset_path or recipe.preset_path
        repo_ids = repo_ids or list(recipe.repos)
        base, arch = recipe.target.base[0], recipe.target.arch
        platform = f"el{recipe.target.major}"
    if preset_path is None or not wanted:
        raise UsageError("give --recipe, or --mirrors and -p")
    with new_session() as session:
        result = resolve_from_preset(
            load_preset(preset_path), wanted, session=session, base=base, arch=arch,
            repo_ids=repo_ids, platform=platform)
    for line in explain(result, package):
        click.echo(line)


recipe_argument = click.argument(
    "recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False, exists=True, path_type=Path))
mirrors_option = click.option(
    "--mirrors", "preset_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Mirror preset (docs/mirrors.md) [default: the one the recipe names].")
cache_option = click.option(
    "--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
    help="Download cache [default: $KUBECRATE_CACHE, else ~/.cache/kubecrate].")


def _tqdm_progress(what: str, total: int):
    from tqdm import tqdm  # not imported for commands that never draw a bar

    bar = tqdm(total=total or None, unit="B", unit_scale=True, desc=what, disable=None,
               leave=False)
    return bar.update


@cli.command("lock")
@recipe_argument
@mirrors_option
@click.option("--out", "lock_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Lock file [default: RECIPE with .lock instead of .yaml].")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 naming what changed when the lock is out of date.")
@cache_option
@verbose_option
def lock_cmd(recipe_path: Path, preset_path: Path | None, lock_path: Path | None, check: bool,
             cache_dir: Path | None, verbose: int) -> None:
    """Resolve RECIPE to every RPM, binary and image digest, into RECIPE.lock.

    Images and binaries are verified by their bytes, so locking fetches them into the cache.
    """
    from builder.cache import Cache
    from builder.inputs.lock import compare, lock_path_for, make_lock
    from builder.inputs.lockfile import StaleLock, load_lock, write_lock
    from builder.inputs.mirrors import load_preset
    from builder.inputs.recipefile import load_recipe
    from builder.net.http import new_session

    configure_logging(verbose)
    recipe = load_recipe(recipe_path)
    preset = load_preset(preset_path or recipe.preset_path)
    lock_path = lock_path or lock_path_for(recipe_path)
    if check and not lock_path.exists():
        raise StaleLock(lock_path, ["the lock does not exist"])
    old = load_lock(lock_path) if lock_path.exists() else None
    with new_session() as session:
        document = make_lock(recipe, preset, session=session, cache=Cache(cache_dir),
                             progress=None)
    changes = compare(old, document) if old is not None else ["new lock"]
    if check:
        if changes:
            raise StaleLock(lock_path, changes)
        click.echo(f"{lock_path} is up to date", err=True)
        return
    if old is not None and not changes:
        click.echo(f"{lock_path} is up to date", err=True)
        return
    write_lock(lock_path, document)
    click.echo(f"wrote {lock_path}: {len(document.rpms)} RPMs, "
               f"{len(document.binaries)} binaries, {len(document.images)} images", err=True)
    for line in changes if old is not None else []:
        click.echo(f"  {line}", err=True)


@cli.command("build")
@recipe_argument
@mirrors_option
@click.option("--key", "key_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=Path("keys") / keys.SECRET_NAME, show_default=True,
              help="minisign secret key: signs the bundle and the installer, which embeds "
                   "its public half.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("bundles"), show_default=True, help="Output folder.")
@click.option("--lock", "lock_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Lock file to use or write [default: RECIPE with .lock instead of .yaml].")
@rotation_options
@click.option("--base", "base_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Also write a delta bundle against this older bundle tar (signed with the "
                   "same key), which the hosts have unpacked: OUT/<name>.delta-<digest>.tar.")
@click.option("--since", "since_path",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="As --base, for the bundle this older lock (beside its unchanged recipe) "
                   "was built into; it is built again to find what it holds.")
@cache_option
@verbose_option
def build_cmd(recipe_path: Path, preset_path: Path | None, key_path: Path, out_dir: Path,
              lock_path: Path | None, rotate_from: Path | None, old_key_expires: str | None,
              base_path: Path | None, since_path: Path | None,
              cache_dir: Path | None, verbose: int) -> None:
    """Build OUT/<name>.tar and OUT/kubecrate-installer.pyz, each with a .minisig.

    Locks first when the lock is missing or stale, downloads only what the cache lacks, and
    lints the result. On failure OUT is left as it was. Prints the bundle.json SHA-256.

    A key rotation (--key NEW.key --rotate-from OLD.key --old-key-expires DATE) signs the
    bundle with the new key and the installer with the old one; that installer trusts both,
    the old one only before DATE (docs/security.md).

    With --base or --since, also writes a delta bundle holding only what the older bundle
    lacks, and reports the size saved.
    """
    from builder.build import build, format_report
    from builder.cache import Cache

    configure_logging(verbose)
    rotation = load_rotation(rotate_from, old_key_expires)
    secret = load_signing_key(key_path)
    report = build(recipe_path, key=secret, out_dir=out_dir, preset_path=preset_path,
                   lock_path=lock_path, cache=Cache(cache_dir), progress=_tqdm_progress,
                   rotation=rotation, base=base_path, since=since_path)
    for line in format_report(report):
        click.echo(line, err=True)
    if rotation is not None:
        click.echo(f"rotation  the installer trusts key {secret.public_key.id_hex} and, before "
                   f"{rotation.expires.isoformat()}, {rotation.old_id}, which signed it",
                   err=True)
    click.echo(report.manifest_sha256)


@cli.command("lint")
@click.argument("bundle_path", metavar="BUNDLE",
                type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--recipe", "recipe_path", type=click.Path(dir_okay=False, exists=True,
                                                         path_type=Path),
              help="Also check that the bundle's role sets are the recipe's.")
@click.option("--cluster", "cluster_path", type=click.Path(dir_okay=False, exists=True,
                                                           path_type=Path),
              help="Also check that the bundle carries what this cluster.yaml runs "
                   "(the static-pod load balancer's images).")
@click.option("--key", "key_path", type=click.Path(dir_okay=False, exists=True),
              help="Verify the signature and every member first, with this public key.")
@verbose_option
def lint_cmd(bundle_path: Path, recipe_path: Path | None, cluster_path: Path | None,
             key_path: str | None, verbose: int) -> None:
    """Check that BUNDLE holds every package and image its role sets and kubeadm need, and
    names no image by digest alone; exit 1 naming what is missing."""
    from builder.bundle.lint import LintFailed, delta_base, lint_bundle
    from builder.inputs.recipefile import load_recipe

    configure_logging(verbose)
    recipe = load_recipe(recipe_path) if recipe_path else None
    key = minisig.load_public_key(key_path) if key_path else None
    cluster = None
    if cluster_path:
        from installer.format.cluster import load_cluster

        cluster = load_cluster(str(cluster_path))
    problems = lint_bundle(bundle_path, recipe, key, cluster)
    if problems:
        raise LintFailed(bundle_path, problems)
    base = delta_base(bundle_path)
    if base:
        click.echo(f"{bundle_path}: a delta bundle, complete: its plan, its members and the "
                   f"result's bundle.json agree; it needs its base {base} in the host's cache",
                   err=True)
        return
    click.echo(f"{bundle_path}: complete", err=True)


@cli.command("split")
@click.argument("bundle_path", metavar="BUNDLE",
                type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--size", "size_text", default="4000M", show_default=True,
              help="Largest part, in bytes or with K, M or G (FAT32 holds 4 GiB - 1 per file).")
@click.option("--key", "key_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=Path("keys") / keys.SECRET_NAME, show_default=True,
              help="minisign secret key that signs the index (the bundle's own).")
@verbose_option
def split_cmd(bundle_path: Path, size_text: str, key_path: Path, verbose: int) -> None:
    """Split BUNDLE for removable media: BUNDLE.part-001, -002, ... and the signed index
    BUNDLE.parts. Copy the parts, BUNDLE.parts(.minisig) and BUNDLE.minisig; on the host,
    `install --bundle BUNDLE.parts` (or any part) checks each part as it reads it and names a
    bad one. Nothing is joined on disk."""
    from builder.bundle.split import parse_size, split_bundle

    configure_logging(verbose)
    written = split_bundle(bundle_path, parse_size(size_text), load_signing_key(key_path))
    for path in written:
        click.echo(str(path))


@cli.command("inspect")
@click.argument("bundle_path", metavar="BUNDLE",
                type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option("--sbom", "sbom", is_flag=True,
              help="Print the bundle's SPDX 2.3 bill of materials (sbom.spdx.json) instead: "
              "every RPM, binary, image, layer and bundled Python package, with purls.")
@verbose_option
def inspect_cmd(bundle_path: Path, as_json: bool, sbom: bool, verbose: int) -> None:
    """List what BUNDLE holds: target, roles, packages, images, binaries and sizes."""
    from builder.bundle.contents import open_bundle
    from builder.bundle.listing import describe, format_listing
    from builder.bundle.sbom import SBOM_PATH

    configure_logging(verbose)
    with open_bundle(bundle_path) as contents:
        if sbom:
            if SBOM_PATH not in contents.members:
                raise BuildError(f"{bundle_path} has no {SBOM_PATH}: it was built by a "
                                 "kubecrate older than the bill of materials; rebuild it")
            click.echo(contents.read(SBOM_PATH).decode("utf-8"), nl=False)
            return
        summary = describe(contents)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        for line in format_listing(summary):
            click.echo(line)


def main(argv=None) -> None:
    configure_logging(0)
    run(cli, argv)
