"""kubecrate installer: runs on the isolated hosts (Python >= 3.6, stdlib + bundled pure-Python
dependencies). Also holds the bundle format's reading side, which the builder imports."""

__version__ = "0.1.0"
