"""A correctly signed bundle from a newer kubecrate (bundle.json format_version above the
installer's) is refused before anything is written, with what to do."""

import pytest
from lab.bundles import files_under, hostile_bundle, make_key, member, run_installer

from installer.format.errors import ExitCode
from installer.format.manifest import FORMAT_VERSION

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("command", ["verify", "unpack"])
def test_a_bundle_with_a_future_format_version_is_refused_and_nothing_written(tmp_path,
                                                                             command):
    key, _, public = make_key(tmp_path / "keys")
    newer = FORMAT_VERSION + 1
    bundle = hostile_bundle(tmp_path / "k8s.tar", key,
                            [member("bin/kubeadm", b"#!/bin/sh\n")], format_version=newer)
    root = tmp_path / "root"
    done = run_installer(command, str(bundle), "--key", str(public), "--root", str(root))
    assert done.returncode == ExitCode.VERIFY_FAILED, done.stderr
    assert "bundle.json: format_version {} is not supported (this installer reads {})".format(
        newer, FORMAT_VERSION) in done.stderr
    assert "use the kubecrate-installer.pyz built together with this bundle" in done.stderr
    assert files_under(root) == []
