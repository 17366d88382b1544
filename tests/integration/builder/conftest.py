"""The installer zipapp built once per session for test_zipapp.py and test_zipapp_preamble.py."""

from __future__ import annotations

import shutil

import pytest
from lab.bundles import make_key

from builder import zipapp
from builder.cache import Cache
from tests.integration.builder.zipapps import EPOCH


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The same zipapp built twice from the same inputs, with the key pair that signs it."""
    root = tmp_path_factory.mktemp("zipapp")
    key, secret_path, public_path = make_key(root / "keys")
    # A snapshot: others may be editing installer/ while the tests build from it.
    source = root / "src" / "installer"
    shutil.copytree(zipapp.INSTALLER_SOURCE, source,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    results = [zipapp.build_zipapp(root / name / zipapp.INSTALLER_NAME, public_path.read_text(),
                                   key, cache=Cache(), source_date_epoch=EPOCH,
                                   installer_source=source)
               for name in ("one", "two")]
    return {"root": root, "key": key, "secret": secret_path, "public": public_path,
            "source": source, "pyz": results[0].path, "again": results[1].path,
            "result": results[0]}
