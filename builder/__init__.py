"""kubecrate builder: recipe -> lock -> fetch -> pack -> sign, on a connected workstation."""

from installer.format import __version__

__all__ = ["__version__"]
