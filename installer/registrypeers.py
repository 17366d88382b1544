"""Which control planes' registries already serve an image: after `images push` on one control
plane, the others are asked over HTTPS (their node address, REGISTRY_NODE_PORT, trusting the
cluster CA that signs their serving certificates) for the image's manifest by tag, the request
containerd makes (distribution's API: `HEAD /v2/<name>/manifests/<tag>`, the digest in the
Docker-Content-Digest header). Read only; each answer is bounded by TIMEOUT and the control
planes are asked at once, so an unreachable one costs TIMEOUT, not more.
"""

import http.client
import ssl
import threading
from typing import Dict, List, Optional, Sequence, Tuple

from installer.imagetar import MANIFEST_TYPES
from installer.registrystore import REGISTRY_NODE_PORT, split_reference

TIMEOUT = 3.0
ACCEPT = ", ".join(MANIFEST_TYPES)


def served_digest(address: str, reference: str, ca_file: str,
                  port: int = REGISTRY_NODE_PORT, timeout: float = TIMEOUT) -> Optional[str]:
    """The manifest digest the registry at `address`:`port` serves for `reference` ('' when
    it answers that it has no such tag), or None when it does not answer over TLS."""
    _registry, name, tag = split_reference(reference)
    try:
        context = ssl.create_default_context(cafile=ca_file)
        connection = http.client.HTTPSConnection(address, port, timeout=timeout,
                                                 context=context)
        try:
            connection.request("HEAD", "/v2/{}/manifests/{}".format(name, tag),
                               headers={"Accept": ACCEPT})
            response = connection.getresponse()
            response.read()
        finally:
            connection.close()
    except (OSError, ssl.SSLError, ssl.CertificateError, http.client.HTTPException):
        return None
    if response.status == 200:
        return response.getheader("Docker-Content-Digest") or ""
    return "" if response.status == 404 else None


def survey(addresses: Sequence[str], images: Sequence[Tuple[str, str]], ca_file: str,
           port: int = REGISTRY_NODE_PORT) -> Dict[str, Optional[List[str]]]:
    """address -> the references of `images` ((reference, manifest digest)) its registry
    does not serve with that digest, or None when it did not answer."""
    answers = {}  # type: Dict[Tuple[str, str], Optional[str]]

    def ask(address: str, reference: str) -> None:
        answers[(address, reference)] = served_digest(address, reference, ca_file, port)

    threads = [threading.Thread(target=ask, args=(address, reference), daemon=True)
               for address in addresses for reference, _digest in images]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 3)
    found = {}  # type: Dict[str, Optional[List[str]]]
    for address in addresses:
        got = [answers.get((address, ref)) for ref, _digest in images]
        found[address] = None if None in got else [
            ref for (ref, digest), have in zip(images, got) if have != digest]
    return found
