"""kubecrate-installer command line: parse, call one core function, map errors to exit codes."""

import contextlib
import os
import pkgutil
from typing import Iterator, Optional

import click
from tqdm import tqdm

from installer import __version__, bundle, minisig
from installer.clikit import common_options, configure_logging, run
from installer.errors import EXIT_CODES_HELP, UsageError

HELP = (
    """Install a kubecrate bundle on this host.

\b
Typical use on an isolated host:
  kubecrate-installer.pyz verify  k8s.tar
  kubecrate-installer.pyz unpack  k8s.tar
  kubecrate-installer.pyz install --bundle k8s.tar --cluster cluster.yaml

The signature X.tar.minisig must sit next to X.tar. The builder's public key is embedded in
the .pyz; --key overrides it.

"""
    + EXIT_CODES_HELP
)

EMBEDDED_KEY = "trusted.pub"  # written into the package by the zipapp build


def trusted_key(path: Optional[str]) -> minisig.PublicKey:
    """The key named by --key, else the one embedded in this installer."""
    if path:
        return minisig.load_public_key(path)
    data = _key_from_package()
    if data is None:
        raise UsageError(
            "no --key given and this installer has no embedded public key",
            hint="pass --key kubecrate.pub (the builder's public key)",
        )
    return minisig.parse_public_key(data.decode("utf-8"), "embedded key")


def _key_from_package() -> Optional[bytes]:
    try:
        return pkgutil.get_data("installer", EMBEDDED_KEY)
    except OSError:
        return None


key_option = click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False),
    help="minisign public key (.pub) to trust instead of the embedded one.",
)
signature_option = click.option(
    "--signature",
    "signature_path",
    type=click.Path(dir_okay=False),
    help="Signature file [default: BUNDLE.minisig].",
)


@click.group(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kubecrate-installer")
def cli() -> None:
    pass


@cli.command("verify")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@key_option
@signature_option
@common_options
def verify_cmd(bundle_path, key_path, signature_path, root, dry_run, verbose):
    """Check BUNDLE's signature, then every member against bundle.json.

    Writes nothing. Exit code 3 names what failed: the signature, or the member with its
    expected and actual digest.
    """
    configure_logging(verbose)
    key = trusted_key(key_path)
    with _progress_bar(bundle_path, "verify") as progress:
        checked = bundle.verify(bundle_path, key, signature_path, progress)
    _report(checked, "verified")


@cli.command("unpack")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(dir_okay=False))
@key_option
@signature_option
@common_options
def unpack_cmd(bundle_path, key_path, signature_path, root, dry_run, verbose):
    """Verify BUNDLE and extract it into ROOT/var/lib/kubecrate/bundles/<digest>/.

    The signature is checked before the tar is read; members are checked while they are
    extracted into a temporary folder, which is renamed into place only when all matched.
    A bundle already in the cache is not extracted again.
    """
    configure_logging(verbose)
    if dry_run:
        click.echo("would unpack {} into {}".format(bundle_path, bundle.cache_root(root)))
        return
    key = trusted_key(key_path)
    with _progress_bar(bundle_path, "unpack") as progress:
        result = bundle.unpack(bundle_path, key, root, signature_path, progress)
    _report(result.bundle, "already unpacked" if result.reused else "unpacked")
    click.echo(result.directory)


@contextlib.contextmanager
def _progress_bar(bundle_path: str, what: str) -> Iterator:
    """A byte bar on a TTY (the bundle is read twice: signature, then members), else nothing."""
    try:
        total = 2 * os.path.getsize(bundle_path)  # type: Optional[int]
    except OSError:
        total = None
    with tqdm(total=total, unit="B", unit_scale=True, desc=what, disable=None, leave=False) as bar:
        yield bar.update


def _report(checked: bundle.Bundle, verb: str) -> None:
    click.echo(
        "{} {}: {} files, bundle.json sha256 {}, signed by key {}".format(
            verb,
            checked.manifest.name,
            len(checked.manifest.files),
            checked.manifest_sha256,
            minisig.key_id_hex(checked.signature.key_id),
        ),
        err=True,
    )
    click.echo("trusted comment: " + checked.signature.trusted_comment, err=True)


def main(argv: object = None) -> None:
    configure_logging(0)
    run(cli, argv)
