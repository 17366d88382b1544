"""Serve URLs whose content a lock pins straight from the cache, through the one session.

`repomd.xml` and the vendors' GPG keys are the only files the builder reads by URL without
knowing their digest in advance; once a lock records those digests, a build mounts them on
its `requests.Session` so that every module asking for them (builder/rpm/repodata.py,
builder/rpm/packages.py) gets the cached, already pinned bytes and the network sees no request:

    pin_urls(session, cache, {"http://.../repodata/repomd.xml": "sha256:..."})

A URL whose blob is not in the cache is left alone (it is fetched as usual, through
builder/net/http.py, and checked by the module that reads it). Any other URL under a mounted
prefix goes to the adapter the session had for it (the transport's pooled one), and a GET
with `Range` (the transport resuming) gets the rest of the cached bytes.
"""

from __future__ import annotations

import io
from typing import Dict, Mapping, Optional, Tuple, Union

import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3 import HTTPResponse

from builder.cache import Cache

__all__ = ["CachedURLAdapter", "pin_urls"]


class CachedURLAdapter(BaseAdapter):
    """Answers GETs of exactly the pinned URLs with 200 and the cached bytes."""

    def __init__(self, cache: Cache, pins: Mapping[str, str],
                 network: Optional[Mapping[str, BaseAdapter]] = None) -> None:
        super().__init__()
        self.cache = cache
        self.pins: Dict[str, str] = dict(pins)
        self.served = 0  # how many answers came from the cache
        self._network = dict(network or {})  # scheme -> the adapter that goes to the network
        self._own = HTTPAdapter()

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Union[None, float, Tuple[float, float], Tuple[float, None]] = None,
        verify: Union[bool, str] = True,
        cert: Union[None, bytes, str, Tuple[Union[bytes, str], Union[bytes, str]]] = None,
        proxies: Optional[Mapping[str, str]] = None,
    ) -> requests.Response:
        digest = self.pins.get(request.url or "")
        if request.method != "GET" or digest is None or not self.cache.has(digest):
            scheme = (request.url or "").split("://", 1)[0]
            return self._network.get(scheme, self._own).send(
                request, stream=stream, timeout=timeout, verify=verify, cert=cert,
                proxies=proxies)
        data = self.cache.path(digest).read_bytes()
        offset = _range_start(request.headers.get("Range", ""))
        response = requests.Response()
        response.status_code = 206 if offset else 200
        response.reason = "OK (kubecrate cache)"
        headers = {"Content-Length": str(len(data) - offset)}
        if offset:
            headers["Content-Range"] = f"bytes {offset}-{len(data) - 1}/{len(data)}"
        response.headers = CaseInsensitiveDict(headers)
        # a urllib3 response, as the network adapter gives: the transport streams `raw`
        response.raw = HTTPResponse(body=io.BytesIO(data[offset:]), headers=headers,
                                    status=response.status_code, preload_content=False,
                                    decode_content=False)
        response.url = request.url or ""
        response.request = request
        response.encoding = None
        self.served += 1
        return response

    def close(self) -> None:
        self._own.close()  # the session closes the adapters it lent


def _range_start(header: str) -> int:
    if header.startswith("bytes=") and header.endswith("-") and header[6:-1].isdigit():
        return int(header[6:-1])
    return 0


def pin_urls(session: requests.Session, cache: Cache, pins: Mapping[str, str]
             ) -> CachedURLAdapter:
    """Mount an adapter on `session` that serves each pinned URL (-> "sha256:...") from
    `cache` when the blob is there; returns it (its `served` counts cache answers)."""
    network = {scheme: session.get_adapter(f"{scheme}://") for scheme in ("http", "https")}
    adapter = CachedURLAdapter(cache, pins, network)
    for url in pins:
        session.mount(url, adapter)
    return adapter
