"""The kubeadm image set per version comes from builder/data/kubeadm-images.yaml."""

import pytest

from builder.registry.kubeadm_images import UnknownKubernetesVersion, known_versions, kubeadm_images


def test_v1_23_17_is_tech_facts_1_1():
    images = kubeadm_images("1.23.17")
    assert [i.reference for i in images] == [
        "registry.k8s.io/kube-apiserver:v1.23.17",
        "registry.k8s.io/kube-controller-manager:v1.23.17",
        "registry.k8s.io/kube-scheduler:v1.23.17",
        "registry.k8s.io/kube-proxy:v1.23.17",
        "registry.k8s.io/pause:3.6",
        "registry.k8s.io/etcd:3.5.6-0",
        "registry.k8s.io/coredns/coredns:v1.8.6",
    ]
    workers = {i.reference for i in images if "worker" in i.roles}
    assert workers == {"registry.k8s.io/kube-proxy:v1.23.17", "registry.k8s.io/pause:3.6",
                       "registry.k8s.io/coredns/coredns:v1.8.6"}


def test_second_profiles():
    assert known_versions() == ("v1.23.17", "v1.28.15", "v1.30.14", "v1.31.14", "v1.32.9",
                                "v1.33.7")
    refs = {i.reference for i in kubeadm_images("v1.30.14")}
    assert {"registry.k8s.io/pause:3.9", "registry.k8s.io/etcd:3.5.15-0",
            "registry.k8s.io/coredns/coredns:v1.11.3"} <= refs
    refs = {i.reference for i in kubeadm_images("v1.31.14")}
    assert {"registry.k8s.io/pause:3.10", "registry.k8s.io/etcd:3.5.15-0",
            "registry.k8s.io/coredns/coredns:v1.11.3"} <= refs
    refs = {i.reference for i in kubeadm_images("v1.32.9")}
    assert {"registry.k8s.io/pause:3.10", "registry.k8s.io/etcd:3.5.21-0",
            "registry.k8s.io/coredns/coredns:v1.11.3"} <= refs
    refs = {i.reference for i in kubeadm_images("v1.33.7")}
    assert {"registry.k8s.io/pause:3.10", "registry.k8s.io/etcd:3.5.24-0",
            "registry.k8s.io/coredns/coredns:v1.12.0"} <= refs


def test_unknown_version_suggests_a_known_one():
    with pytest.raises(UnknownKubernetesVersion) as info:
        kubeadm_images("v1.23.16")
    assert "did you mean 'v1.23.17'" in info.value.hint
