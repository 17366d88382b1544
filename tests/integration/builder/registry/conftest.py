"""The bundle's image archive, pulled once per session from the mirror world, for the tests
that judge it with real readers (test_image_archive.py, test_registry_store.py)."""

from __future__ import annotations

import pytest

from builder.cache import Cache
from builder.inputs.mirrors import load_preset
from builder.registry.client import pull_images
from builder.registry.image_archive import write_archive

MTIME = 1700000000


def pull(world, preset, cache):
    return pull_images(world.state["registry"]["images"], "linux/amd64", load_preset(preset),
                       cache)


@pytest.fixture(scope="session")
def pulled(mirror_world, tmp_path_factory):
    cache = Cache(tmp_path_factory.mktemp("cache"))
    return cache, pull(mirror_world, mirror_world.preset, cache)


@pytest.fixture(scope="session")
def archive(pulled, tmp_path_factory):
    cache, images = pulled
    return write_archive(images, cache, tmp_path_factory.mktemp("archive") / "images.tar",
                         mtime=MTIME)
