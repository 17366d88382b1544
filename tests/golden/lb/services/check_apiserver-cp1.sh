#!/bin/sh
# Written by kubecrate for cp1: keepalived's health check. It fails when this node's
# apiserver or its haproxy frontend does not answer /healthz, so that keepalived lowers this
# node's VRRP priority and the VIP moves to a healthy control-plane node.

fail() {
    echo "check_apiserver: $*" >&2
    exit 1
}

curl --silent --fail --insecure --max-time 1 --output /dev/null \
    "https://10.213.0.11:6443/healthz" \
    || fail "the apiserver on 10.213.0.11:6443 does not answer /healthz"
curl --silent --fail --insecure --max-time 1 --output /dev/null \
    "https://127.0.0.1:8443/healthz" \
    || fail "haproxy on port 8443 does not answer /healthz"
