"""`kubecrate`: the builder's command line. Thin: parse, call one core function, map errors."""

import click

from builder import __version__
from installer.clikit import configure_logging, run
from installer.errors import EXIT_CODES_HELP

HELP = """Build signed offline Kubernetes bundles for air-gapped RHEL-family hosts.

\b
  kubecrate keygen --out keys/
  kubecrate build manifests/k8s-1.23.17-el7.yaml --key keys/kubecrate.key
  kubecrate verify bundles/k8s-1.23.17-el7.tar --key keys/kubecrate.pub

""" + EXIT_CODES_HELP


@click.group(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kubecrate")
def cli() -> None:
    pass


def main(argv=None) -> None:
    configure_logging(0)
    run(cli, argv)
