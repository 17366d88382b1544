#!/usr/bin/env python3
"""`keepalived` and `haproxy` for the e2e namespace hosts (linked under both names on a host's
PATH). The mirror world's systemctl stand-in starts units named in $KUBECRATE_SYSTEMCTL_RUN as
`<unit> --kubecrate-root=ROOT`; this runs the real daemon, inside the host's network namespace,
on the configs the installer rendered under ROOT:

- keepalived in a private mount namespace where ROOT/etc/keepalived is bind-mounted on
  /etc/keepalived, so the rendered keepalived.conf runs unchanged (its check script path is
  /etc/keepalived/check_apiserver.sh), with pid files under ROOT/run;
- haproxy in the foreground on ROOT/etc/haproxy/haproxy.cfg.

Any other call (the installer's `haproxy -c -f FILE`) goes straight to the real tool.
"""

import os
import sys

REAL = {"keepalived": "/usr/sbin/keepalived", "haproxy": "/usr/sbin/haproxy"}


def main() -> None:
    name = os.path.basename(sys.argv[0])
    args = sys.argv[1:]
    marker = [a for a in args if a.startswith("--kubecrate-root=")]
    if not marker:
        os.execv(REAL[name], [REAL[name]] + args)
    root = marker[0].split("=", 1)[1]
    run = os.path.join(root, "run")
    os.makedirs(run, exist_ok=True)
    if name == "haproxy":
        os.execv(REAL[name], [REAL[name], "-db", "-f",
                              os.path.join(root, "etc/haproxy/haproxy.cfg")])
    inner = "mount --bind {0}/etc/keepalived /etc/keepalived && exec {1} --dont-fork " \
            "--log-console --log-detail --vrrp --use-file /etc/keepalived/keepalived.conf " \
            "--pid {2}/keepalived.pid --vrrp_pid {2}/vrrp.pid --checkers_pid {2}/checkers.pid" \
            .format(root, REAL[name], run)
    os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner])


if __name__ == "__main__":
    main()
