"""A WAN link between two network namespaces for kernels without `tc netem` (this machine's has
no CONFIG_NET_SCH_NETEM): each namespace gets a point-to-point TUN device, and this process
forwards every IP packet from one to the other after a fixed one-way delay, dropping each with
a fixed probability (independent losses, like netem's `loss P%`). The kernel's `tbf` qdisc on
each TUN device limits the rate (bench.netfetch sets it up). Runs until killed or for LIMIT
seconds.

    python3 linkemu.py NS_A DEV_A NS_B DEV_B DELAY_SECONDS LOSS_FRACTION LIMIT_SECONDS
"""

from __future__ import annotations

import collections
import ctypes
import fcntl
import os
import random
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
MTU = 65536


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def open_tun(namespace: str, device: str) -> int:
    """Open the TUN device `device` inside `namespace` (`ip netns` name); the descriptor stays
    bound to that namespace's device after we switch back."""
    libc = _libc()
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace} failed")
        fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", device.encode(), IFF_TUN | IFF_NO_PI))
        os.set_blocking(fd, False)
        return fd
    finally:
        libc.setns(home, CLONE_NEWNET)
        os.close(home)
        os.close(target)


def forward(a: int, b: int, delay: float, loss: float, limit: float, seed: int = 16) -> None:
    rng = random.Random(seed)
    peer = {a: b, b: a}
    queue: collections.deque = collections.deque()  # (due, fd, packet); one delay keeps order
    end = time.monotonic() + limit
    while time.monotonic() < end:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, fd, packet = queue.popleft()
            try:
                os.write(fd, packet)
            except OSError:  # the namespace's queue is full: a loss too
                pass
        wait = max(0.0, queue[0][0] - now) if queue else 0.5
        ready, _, _ = select.select([a, b], [], [], wait)
        now = time.monotonic()
        for fd in ready:
            for _ in range(64):  # drain, bounded
                try:
                    packet = os.read(fd, MTU)
                except BlockingIOError:
                    break
                if rng.random() >= loss:
                    queue.append((now + delay, peer[fd], packet))


def main(ns_a: str, dev_a: str, ns_b: str, dev_b: str, delay: str, loss: str,
         limit: str) -> None:
    forward(open_tun(ns_a, dev_a), open_tun(ns_b, dev_b), float(delay), float(loss),
            float(limit))


if __name__ == "__main__":
    main(*sys.argv[1:8])
