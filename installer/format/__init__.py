"""What the builder and the installer share, and the only part of installer/ that builder/
imports (tests/unit/test_boundary.py holds both sides to it; docs/architecture.md):

- the bundle format: bundle.json (manifest, bundleinfo), the tar reader (tarstream) and the
  one-read verify-and-extract (bundle), the image archive (imagearchive), the minisign
  signature (minisig);
- the documents both CLIs read: the YAML reader (yamldoc) and cluster.yaml (cluster, lbspec),
  which `kubecrate lint --cluster` must read exactly as the installer does;
- the error root with its exit codes (errors), the CLI edge that turns errors into messages
  and codes (clikit) and the redaction both apply to what they print (redact);
- the release version stamped on both the builder and the installer zipapp.

Like all of installer/, it runs on Python 3.6 with the stdlib and the bundled dependencies
only (builder/data/installer-requirements.txt); unlike the rest, it imports nothing of
installer/ outside this package.
"""

__version__ = "0.1.0"
