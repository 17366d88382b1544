import hashlib

import pytest

from builder.cache import Cache, DigestMismatch


def test_matching_bytes_enter_the_cache(tmp_path):
    cache = Cache(tmp_path)
    digest = cache.put_bytes(b"layer")
    assert cache.path(digest).read_bytes() == b"layer"
    assert cache.path(digest).parent.name == digest[7:9]


def test_a_mismatch_never_enters_the_cache(tmp_path):
    cache = Cache(tmp_path)
    promised = "sha256:" + hashlib.sha256(b"good").hexdigest()
    with pytest.raises(DigestMismatch, match="https://mirror/x"):
        with cache.writer(promised, "https://mirror/x") as out:
            out.write(b"evil")
    assert not cache.has(promised)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []
