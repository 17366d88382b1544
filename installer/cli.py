"""kubecrate-installer command line: parse, call one core function, map errors to exit codes."""

import click

from installer import __version__
from installer.clikit import configure_logging, run
from installer.errors import EXIT_CODES_HELP

HELP = (
    """Install a kubecrate bundle on this host.

\b
Typical use on an isolated host:
  kubecrate-installer.pyz verify  k8s.tar
  kubecrate-installer.pyz install --bundle k8s.tar --cluster cluster.yaml

"""
    + EXIT_CODES_HELP
)


@click.group(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kubecrate-installer")
def cli() -> None:
    pass


def main(argv: object = None) -> None:
    configure_logging(0)
    run(cli, argv)
