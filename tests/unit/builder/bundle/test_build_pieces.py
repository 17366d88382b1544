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
from builder.inputs.lockfile import Lock, LockError, dump_lock
from builder.inputs.recipe import Addon, PackageSpec
from builder.net.pinned import pin_urls

LOCK = {
    "lock_version": 1, "created": 1700000000,
    "recipe": {"name": "r", "path": "r.yaml", "sha256": "a" * 64},
    "preset": {"name": "p", "path": "p.yaml", "sha256": "b" * 64},
    "kubeadm_images": ["registry.k8s.io/pause:3.6"],
    "target": {"os": "centos", "release": "7.9", "arch": "x86_64", "base": ["@core"]},
    "kubernetes_version": "v1",
    "base": {"kind": "none", "source": "none", "packages": [], "missing": []},
    "requests": {"socat": ""}, "roles": {"worker": {"images": ["registry.k8s.io/pause:3.6"]}},
    "repos": [{"id": "base", "baseurl": "http://m/base", "priority": 99,
               "repomd": {"url": "http://m/base/repodata/repomd.xml", "sha256": "d" * 64},
               "gpgkeys": [{"url": "http://m/key", "fingerprint": "F" * 40, "sha256": "e" * 64}]}],
    "binaries": [{"name": "kubeadm", "version": "v1", "arch": "amd64", "filename": "kubeadm",
                  "url": "u", "checksum_url": "u.sha256", "sha256": "f" * 64, "size": 3}],
    "rpms": [{"name": "socat", "nevra": "socat-1-1.x86_64", "arch": "x86_64", "repo": "base",
              "sha256": "c" * 64, "url": "u", "size": 1}],
    "images": [{"reference": "registry.k8s.io/pause:3.6", "platform": "linux/amd64",
                "manifest_digest": "sha256:1", "manifest_media_type": "m",
                "config_digest": "sha256:2", "source": "s",
                "layers": [{"digest": "sha256:3", "media_type": "l", "size": 5}]}],
}


def _changed(**sections):
    new = json.loads(json.dumps(LOCK))
    new.update(sections)
    return compare(Lock.from_json(LOCK), Lock.from_json(new))


def test_an_identical_lock_has_no_changes():
    assert compare(Lock.from_json(LOCK), Lock.from_json(json.loads(json.dumps(LOCK)))) == []


def test_the_lock_reads_back_to_the_same_bytes():
    raw = (json.dumps(LOCK, indent=2, sort_keys=True) + "\n").encode()
    assert dump_lock(Lock.from_json(json.loads(raw))) == raw


@pytest.mark.parametrize("change, message", [
    (lambda d: d["rpms"][0].pop("sha256"), r"no rpms\[0\]\.sha256"),
    (lambda d: d["images"][0]["layers"][0].update(size="5"),
     r"images\[0\]\.layers\[0\]\.size is not a whole number"),
    (lambda d: d["roles"].update(worker={"images": "x"}), "roles.worker.images is not a list"),
])
def test_a_malformed_lock_names_the_key(change, message):
    document = json.loads(json.dumps(LOCK))
    change(document)
    with pytest.raises(LockError, match=message) as caught:
        Lock.from_json(document, "x.lock")
    assert isinstance(caught.value, BuildError) and "x.lock" in str(caught.value.message)


def test_changes_name_the_rpm_and_the_image():
    rpms = [dict(LOCK["rpms"][0], sha256="d" * 64),
            {"name": "ipset", "nevra": "ipset-7-1.x86_64", "arch": "x86_64", "repo": "base",
             "sha256": "e" * 64, "url": "v", "size": 2}]
    images = [dict(LOCK["images"][0], manifest_digest="sha256:9")]
    changes = _changed(rpms=rpms, images=images)
    assert "rpms: + ipset-7-1.x86_64" in changes
    assert f"rpms: socat: sha256 {'c' * 64} -> {'d' * 64}" in changes
    assert "images: registry.k8s.io/pause:3.6: manifest_digest sha256:1 -> sha256:9" in changes


def test_a_changed_recipe_is_named():
    assert _changed(recipe={"name": "r", "path": "r.yaml", "sha256": "f" * 64}) == [
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
