"""kubecrate installer: runs on the isolated hosts (Python >= 3.6, stdlib + bundled pure-Python
dependencies). The part the builder imports too is installer/format/."""

from installer.format import __version__

__all__ = ["__version__"]
