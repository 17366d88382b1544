"""Small pieces of the build pipeline, without servers: lock comparison, the spec forms the
installer receives, cache-served pinned URLs, and the flannel manifest."""

from __future__ import annotations

import json

import pytest
import requests
import yaml

from builder.bundle.addons import render_flannel
from builder.bundle.stage import install_spec
from builder.cache import Cache
from builder.errors import BuildError
from builder.inputs.lock import compare, request_text
from builder.inputs.recipe import Addon, PackageSpec
from builder.net.pinned import pin_urls

LOCK = {
    "recipe": {"path": "r.yaml", "sha256": "a" * 64},
    "preset": {"path": "p.yaml", "sha256": "b" * 64},
    "kubeadm_images": ["registry.k8s.io/pause:3.6"], "target": {}, "kubernetes_version": "v1",
    "base": {}, "requests": {}, "roles": {},
    "repos": [], "binaries": [],
    "rpms": [{"name": "socat", "nevra": "socat-1-1.x86_64", "sha256": "c" * 64, "url": "u"}],
    "images": [{"reference": "registry.k8s.io/pause:3.6", "manifest_digest": "sha256:1",
                "config_digest": "sha256:2", "source": "s"}],
}


def _changed(**sections):
    new = json.loads(json.dumps(LOCK))
    new.update(sections)
    return compare(LOCK, new)


def test_an_identical_lock_has_no_changes():
    assert compare(LOCK, json.loads(json.dumps(LOCK))) == []


def test_changes_name_the_rpm_and_the_image():
    rpms = [dict(LOCK["rpms"][0], sha256="d" * 64),
            {"name": "ipset", "nevra": "ipset-7-1.x86_64", "sha256": "e" * 64, "url": "v"}]
    images = [dict(LOCK["images"][0], manifest_digest="sha256:9")]
    changes = _changed(rpms=rpms, images=images)
    assert "rpms: + ipset-7-1.x86_64" in changes
    assert f"rpms: socat: sha256 {'c' * 64} -> {'d' * 64}" in changes
    assert "images: registry.k8s.io/pause:3.6: manifest_digest sha256:1 -> sha256:9" in changes


def test_a_changed_recipe_is_named():
    assert _changed(recipe={"path": "r.yaml", "sha256": "f" * 64}) == [
        "recipe r.yaml changed (sha256 aaaaaaaaaaaa -> ffffffffffff)"]


@pytest.mark.parametrize("spec, resolver_form, install", [
    (PackageSpec("docker-ce", "=", "3:20.10.24-3.el7"), "docker-ce-3:20.10.24-3.el7",
     "docker-ce-20.10.24-3.el7"),
    (PackageSpec("socat"), "socat", "socat"),
    (PackageSpec("python3", ">=", "3.6"), "python3", "python3"),
])
def test_spec_forms(spec, resolver_form, install):
    assert request_text(spec) == resolver_form
    assert install_spec(spec) == install


def test_pinned_urls_come_from_the_cache_without_a_server(tmp_path):
    cache = Cache(tmp_path)
    digest = cache.put_bytes(b"<repomd/>")
    url = "http://127.0.0.1:9/repo/repodata/repomd.xml"  # port 9: nothing listens
    with requests.Session() as session:
        adapter = pin_urls(session, cache, {url: digest})
        response = session.get(url, timeout=1)
        assert (response.status_code, response.content) == (200, b"<repomd/>")
        partial = session.get(url, headers={"Range": "bytes=2-"}, timeout=1)
        assert (partial.status_code, partial.content) == (206, b"epomd/>")
        assert adapter.served == 2
        with pytest.raises(requests.ConnectionError):
            session.get(url + ".asc", timeout=1)  # not pinned: goes to the network


def test_flannel_manifest_uses_the_addon_images():
    addon = Addon("flannel", "v0.22.3", ("docker.io/flannel/flannel:v0.22.3",
                                         "docker.io/flannel/flannel-cni-plugin:v1.2.0"))
    documents = [d for d in yaml.safe_load_all(render_flannel(addon, "10.9.0.0/16")) if d]
    assert [d["kind"] for d in documents] == ["Namespace", "ClusterRole", "ClusterRoleBinding",
                                              "ServiceAccount", "ConfigMap", "DaemonSet"]
    net = json.loads(documents[4]["data"]["net-conf.json"])
    assert net == {"Network": "10.9.0.0/16", "Backend": {"Type": "vxlan"}}


def test_flannel_without_its_cni_plugin_image_is_refused():
    addon = Addon("flannel", "v0.22.3", ("docker.io/flannel/flannel:v0.22.3",))
    with pytest.raises(BuildError, match="no flannel-cni-plugin image"):
        render_flannel(addon)
