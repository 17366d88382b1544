"""The test lab: the hosts that the tests, scripts/demo and scripts/benchmarks install on.

Network-namespace hosts (`netns`), the HA cluster on them (`halab`) and the VIP lab of real
keepalived and haproxy (`viplab`, with `lbdaemon`, `healthz_server`, `poller`, run by path),
per-test host roots (`hostworld`, `hoststandins` with `hostcmd`, `hostruntime`, `hostselinux`;
`dnfroot`, `osreleases`), private container runtimes (`runtimes`), a real etcd for the etcd
day-2 commands (`etcdlab`), hand-packed bundles (`bundles`), the hosts' real interpreters
(`py36`) and sample load-balancer settings (`lbsamples`). The servers they install from are
the mirror world next door (scripts/mirrorworld/).

Both tests/ and scripts/ import it, and it imports neither tests/ nor pytest: what a lab
needs and cannot find (a tool, an interpreter) raises `lab.tools.LabSetupError`, which fails a
test (never skips it) and stops a script with the message. Fixtures live in tests/conftest.py.
It is not part of the kubecrate distribution (setup.cfg ships builder/ and installer/ only).
"""
