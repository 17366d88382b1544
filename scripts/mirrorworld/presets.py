"""The mirror world's own mirror presets (docs/mirrors.md), written by `up` into the run folder.

Repo ids are upstream's, key fingerprints are the test keys' (from yum.generate), release
templates are upstream's re-homed under nginx, and registries point at the local instances.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Dict

import yaml

from mirrorworld.nginx import DAOCLOUD_PREFIX

REPO = Path(__file__).resolve().parents[2]
UPSTREAM_PRESET = REPO / "manifests" / "mirrors" / "upstream.yaml"
# yum.generate's repos, by their path under www/, get the ids CentOS-Base.repo and
# docker-ce.repo use, so that a recipe names the same repo ids with every preset.
REPO_IDS = (
    ("/os/", "base"),
    ("/updates/", "updates"),
    ("/extras/", "extras"),
    ("download.docker.com/", "docker-ce-stable"),
)

# Presets over parts of the EL8/EL9 slice: variant -> (the repo ids a host's repo files use ->
# yum_el8.yaml's, whose ids are unique across the slice; what the preset serves).
SLICE_PRESETS = {
    # for k8s-1.30-el9-containerd
    "el9": ({"baseos": "rocky9-baseos", "appstream": "rocky9-appstream",
             "docker-ce-stable": "docker-ce-stable-9", "kubernetes": "kubernetes-v1.30"},
            "Rocky 9.4 BaseOS/AppStream (vault), docker-ce centos/9, pkgs.k8s.io v1.30"),
    # for k8s-1.31-el9-containerd: the same Rocky 9.4 and centos/9, pkgs.k8s.io v1.31
    "el9-1.31": ({"baseos": "rocky9-baseos", "appstream": "rocky9-appstream",
                  "docker-ce-stable": "docker-ce-stable-9", "kubernetes": "kubernetes-v1.31"},
                 "Rocky 9.4 BaseOS/AppStream (vault), docker-ce centos/9, pkgs.k8s.io v1.31"),
    # for k8s-1.32-el9-containerd: the same Rocky 9.4 and centos/9, pkgs.k8s.io v1.32
    "el9-1.32": ({"baseos": "rocky9-baseos", "appstream": "rocky9-appstream",
                  "docker-ce-stable": "docker-ce-stable-9", "kubernetes": "kubernetes-v1.32"},
                 "Rocky 9.4 BaseOS/AppStream (vault), docker-ce centos/9, pkgs.k8s.io v1.32"),
    # for k8s-1.33-el9-containerd: the same Rocky 9.4 and centos/9, pkgs.k8s.io v1.33
    "el9-1.33": ({"baseos": "rocky9-baseos", "appstream": "rocky9-appstream",
                  "docker-ce-stable": "docker-ce-stable-9", "kubernetes": "kubernetes-v1.33"},
                 "Rocky 9.4 BaseOS/AppStream (vault), docker-ce centos/9, pkgs.k8s.io v1.33"),
    # for k8s-1.30-el9-containerd-aarch64: the aarch64 trees, pkgs.k8s.io's one multi-arch repo
    "el9-aarch64": ({"baseos": "rocky9-baseos-aarch64", "appstream": "rocky9-appstream-aarch64",
                     "docker-ce-stable": "docker-ce-stable-9-aarch64",
                     "kubernetes": "kubernetes-v1.30"},
                    "Rocky 9.4 BaseOS/AppStream aarch64 (vault), docker-ce centos/9 aarch64, "
                    "pkgs.k8s.io v1.30"),
    # for k8s-1.30-el8-containerd: docker-ce centos/8 is the one CentOS 8.5 uses too
    "rocky8": ({"baseos": "rocky8-baseos", "appstream": "rocky8-appstream",
                "docker-ce-stable": "docker-ce-stable", "kubernetes": "kubernetes-v1.30"},
               "Rocky 8.9 BaseOS/AppStream (vault, modular), docker-ce centos/8, "
               "pkgs.k8s.io v1.30"),
}


def _repo_order(rel: str) -> tuple:
    ids = [marker for marker, _ in REPO_IDS]
    return next((i for i, m in enumerate(ids) if m in f"/{rel}/"), len(ids)), rel


def _rehome(url: str, base: str) -> str:
    """https://dl.k8s.io/x -> http://127.0.0.1:PORT/dl.k8s.io/x: the world serves every
    upstream host as a top-level folder of www/."""
    scheme, _, rest = url.partition("://")
    return f"{base}/{rest}"


def _www_url(base: str, www: Path, path: str) -> str:
    candidate = Path(path)
    if candidate.is_absolute():
        try:
            return f"{base}/{candidate.resolve().relative_to(www).as_posix()}"
        except ValueError:
            return candidate.resolve().as_uri()
    return f"{base}/{path.lstrip('/')}"


def world_presets(state: Dict[str, Any], www: Path) -> Dict[str, Dict[str, Any]]:
    """The world's own presets (plain data, valid under docs/mirrors.md): `default` with
    registries under their canonical paths, `aliyun` with registry.k8s.io from the
    google_containers namespace and the binaries under the DaoCloud-style prefix, `token`
    with registry.k8s.io behind anonymous bearer tokens,
    `auth` with registry.k8s.io behind TLS and basic auth."""
    base = state["nginx"]["url"]
    upstream = yaml.safe_load(UPSTREAM_PRESET.read_text())
    keys = state["yum"]["gpgkeys"]
    yum = {}
    for rel in sorted(state["yum"]["repos"].values(), key=_repo_order):
        given = next(k for k, v in state["yum"]["repos"].items() if v == rel)
        repo_id = next((rid for marker, rid in REPO_IDS if marker in f"/{rel}/"), given)
        vendor = "docker" if "download.docker.com" in rel else "centos"
        yum[repo_id] = {
            "baseurl": f"{base}/{rel.strip('/')}/",
            "gpgkeys": [
                {
                    "url": _www_url(base, www, keys[vendor]["path"]),
                    "fingerprint": keys[vendor]["fingerprint"],
                }
            ],
        }
    tree = next(iter(state["releases"]["kubernetes"].values()))
    kubernetes = {"base": f"{base}/{tree.split('/release/')[0].strip('/')}"}
    releases = {
        name: {"url": _rehome(spec["url"], base)} for name, spec in upstream["releases"].items()
    }
    instances = state["registry"]["instances"]

    def plain(name: str) -> Dict[str, Any]:
        return {"url": instances[name]["url"], "insecure": True}

    registries = {
        host: plain(host) for host in ("registry.k8s.io", "docker.io") if host in instances
    }
    common = {"yum": yum, "kubernetes": kubernetes, "releases": releases}
    presets = {
        "default": {
            "name": "mirror-world",
            "description": "scripts/mirror-world: canonical registry paths",
            **common,
            "registries": registries,
        },
    }
    if state.get("yum_el8"):
        presets["el8"] = {
            "name": "mirror-world-el8",
            "description": "scripts/mirror-world: CentOS 8.5 BaseOS/AppStream (modular) and a "
            "Stream 9 BaseOS in zstd",
            **common,
            "yum": _el8_repos(state["yum_el8"], base, www),
            "registries": registries,
        }
    if "aliyun" in instances:
        aliyun = {
            **plain("aliyun"),
            "namespace": instances["aliyun"].get("namespace", "google_containers"),
            # registry.py flattens every path of that namespace, as Aliyun's is flat
            "flatten": True if instances["aliyun"].get("flatten") else ["coredns/coredns"],
        }
        # China-shaped throughout: binaries through the DaoCloud-style prefix (nginx.py),
        # as manifests/mirrors/china.yaml fetches them.
        china = f"{base}/{DAOCLOUD_PREFIX}"
        presets["aliyun"] = {
            "name": "mirror-world-aliyun",
            "description": "scripts/mirror-world: an Aliyun-shaped namespace and "
            "DaoCloud-shaped binary mirror",
            **common,
            "kubernetes": {"base": kubernetes["base"].replace(base, china, 1)},
            "releases": {
                name: {"url": _rehome(spec["url"], china)}
                for name, spec in upstream["releases"].items()
            },
            "registries": {**registries, "registry.k8s.io": aliyun},
        }
    slice_repos = _el8_repos(state["yum_el8"], base, www) if state.get("yum_el8") else {}
    for variant, (ids, what) in SLICE_PRESETS.items():
        if set(ids.values()) <= set(slice_repos):
            presets[variant] = {
                "name": f"mirror-world-{variant}",
                "description": f"scripts/mirror-world: {what}",
                **common,
                "yum": {rid: slice_repos[given] for rid, given in ids.items()},
                "registries": registries,
            }
    for variant in ("el8", *SLICE_PRESETS):
        # China-shaped builds of the EL8/EL9 recipes: Aliyun registry + DaoCloud binaries (as
        # mirror-world-aliyun) over the same repos.
        if "aliyun" in presets and variant in presets:
            presets[f"aliyun-{variant}"] = {
                **presets["aliyun"],
                "name": f"mirror-world-aliyun-{variant}",
                "description": f"scripts/mirror-world: the aliyun variant over the {variant} repos",
                "yum": presets[variant]["yum"],
            }
    if "token" in instances:
        presets["token"] = {
            "name": "mirror-world-token",
            "description": "scripts/mirror-world: anonymous bearer tokens, as Docker Hub has",
            **common,
            "registries": {**registries, "registry.k8s.io": plain("token")},
        }
    if "auth" in instances:
        auth = {
            "url": instances["auth"]["url"],
            "ca": instances["auth"]["ca"],
            "credentials": {"docker_config": state["docker_config"]},
        }
        presets["auth"] = {
            "name": "mirror-world-auth",
            "description": "scripts/mirror-world: TLS and basic auth",
            **common,
            "registries": {**registries, "registry.k8s.io": auth},
        }
    return presets


def _el8_repos(result: Dict[str, Any], base: str, www: Path) -> Dict[str, Any]:
    """The EL8/EL9 slice under the ids its repo files use (baseos, appstream, c9s-baseos)."""
    keys = result["gpgkeys"]
    return {
        rid: {
            "baseurl": f"{base}/{rel.strip('/')}/",
            "gpgkeys": [{"url": _www_url(base, www, keys[result["repo_keys"][rid]]["path"]),
                         "fingerprint": keys[result["repo_keys"][rid]]["fingerprint"]}],
        }
        for rid, rel in result["repos"].items()
    }


def docker_config(state: Dict[str, Any], run: Path) -> str:
    """A docker config.json holding the auth instance's credentials, for presets to name."""
    auths = {}
    for entry in state["registry"]["instances"].values():
        if entry.get("username") and entry.get("password"):
            host = entry["url"].split("://", 1)[1]
            token = base64.b64encode(f"{entry['username']}:{entry['password']}".encode())
            auths[host] = {"auth": token.decode()}
    path = run / "docker-config.json"
    path.write_text(json.dumps({"auths": auths}, indent=1, sort_keys=True))
    path.chmod(0o600)
    return str(path)


def write(state: Dict[str, Any], www: Path, run: Path) -> Dict[str, str]:
    """Write every variant into `run`, each checked with the builder's own loader; return
    {variant: path}."""
    from builder.inputs.mirrors import load_preset

    written = {}
    for variant, data in world_presets(state, www).items():
        name = "mirror-world.yaml" if variant == "default" else f"mirror-world-{variant}.yaml"
        path = run / name
        path.write_text(
            "# Written by scripts/mirror-world up; schema in docs/mirrors.md.\n"
            + yaml.safe_dump(data, sort_keys=False)
        )
        load_preset(path)  # the world must never hand out a preset its own loader refuses
        written[variant] = str(path)
    return written
