"""Which host a bundle serves: the EL platform and the distribution, from /etc/os-release.

The EL major is read from `PLATFORM_ID` ("platform:el8", "platform:el9"), which every EL8+
distribution sets and dnf itself uses for module platform streams (docs/el8-el9.md,
"Host identity"); CentOS 7 has no PLATFORM_ID, so an EL host without it is `el` + the major
of VERSION_ID. The distribution is `ID` ("rocky", "almalinux", "rhel", "centos").

A bundle serves the hosts of its own platform only (`el` + the major of target.release). Of
those, the distributions in bundle.json's `target.hosts` when the recipe lists them (a Rocky
9.4 bundle may serve Alma, RHEL and CentOS Stream 9: they rebuild the same sources), else a
host whose ID or ID_LIKE names target.os (as before that key existed).
"""

from typing import Dict, NamedTuple, Optional, Sequence, Tuple

# IDs (or ID_LIKE words) of the RHEL family: only these get a platform from VERSION_ID.
EL_FAMILY = ("rhel", "centos", "rocky", "almalinux", "ol", "fedora")


class OsRelease(NamedTuple):
    id: str  # "rocky"
    like: Tuple[str, ...]  # ("rhel", "centos", "fedora")
    version_id: str  # "9.4"
    platform: str  # "el9"; "" when the host is no EL host at all
    name: str  # "Rocky Linux 9.4", for messages

    @property
    def platform_id(self) -> str:
        return "platform:" + self.platform if self.platform else "no EL platform"


def parse_os_release(text: str) -> Dict[str, str]:
    """/etc/os-release as a dict, quotes removed (os-release(5): shell-style assignments)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("\"'")
    return values


def read_os_release(text: str) -> OsRelease:
    values = parse_os_release(text)
    ident = values.get("ID", "").lower()
    like = tuple(values.get("ID_LIKE", "").lower().split())
    version = values.get("VERSION_ID", "")
    platform_id = values.get("PLATFORM_ID", "")
    if platform_id.startswith("platform:"):
        platform = platform_id[len("platform:"):]
    elif (ident in EL_FAMILY or set(like) & set(EL_FAMILY)) and version:
        platform = "el" + version.split(".")[0]
    else:
        platform = ""
    name = "{} {}".format(values.get("NAME") or ident or "an unknown OS", version).strip()
    return OsRelease(ident, like, version, platform, name)


def bundle_platform(release: str) -> str:
    """"el9" for a bundle whose target.release is "9.4"."""
    return "el" + release.split(".")[0]


def refusal(host: OsRelease, name: str, target_os: str, release: str,
            hosts: Sequence[str] = ()) -> Optional[Tuple[str, str]]:
    """(message, fix) when the bundle `name` (its target.os, target.release and target.hosts)
    does not serve `host`; None when it does."""
    want = bundle_platform(release)
    target = "{} {}".format(target_os, release)
    if host.platform != want:
        return ("bundle {} is for platform:{} ({}) but this host is {} ({})".format(
            name, want, target, host.platform_id, host.name),
            "use a bundle built for {}".format(host.platform_id if host.platform
                                               else host.name))
    if hosts:
        if host.id in hosts:
            return None
        return ("bundle {} ({}) serves {} hosts of platform:{} (target.hosts) but this host "
                "is {} (ID {})".format(name, target, ", ".join(hosts), want, host.name,
                                       host.id or "unset"),
                "use a bundle built for {}, or list {} in the recipe's target.hosts".format(
                    host.name, host.id or "its ID"))
    if target_os == host.id or target_os in host.like:
        return None
    return ("bundle {} is for {} but this host is {} (ID {}, ID_LIKE {})".format(
        name, target, host.name, host.id or "unset", " ".join(host.like) or "unset"),
        "use a bundle built for {}, or list {} in the recipe's target.hosts".format(
            host.name, host.id or "its ID"))
