#!/bin/sh
# Written by kubecrate for cp1: keepalived's health check. It fails when this node's
# apiserver or its haproxy frontend does not answer /healthz, so that keepalived lowers this
# node's VRRP priority and the VIP moves to a healthy control-plane node. Both are asked at
# once, each given 4 s: a busy apiserver's /healthz waits up to 2 s for its etcd check.

fail() {
    echo "check_apiserver: $*" >&2
    exit 1
}

curl --silent --fail --insecure --max-time 4 --output /dev/null \
    "https://10.213.0.11:6443/healthz" &
apiserver=$!
curl --silent --fail --insecure --max-time 4 --output /dev/null \
    "https://127.0.0.1:8443/healthz" &
frontend=$!
wait "$apiserver" \
    || fail "the apiserver on 10.213.0.11:6443 does not answer /healthz"
wait "$frontend" || fail "haproxy on port 8443 does not answer /healthz"
