"""The mirror world's runtime RPMs carry the systemd unit the installer's runtime step restarts
(installer/steps/runtime.py: `systemctl restart containerd|docker`), as the real RPMs do
(containerd.io and docker-ce of download.docker.com install
/usr/lib/systemd/system/containerd.service and docker.service). Read from the package data
(scripts/mirrorworld/yumdata.py load), so a package without its unit is caught in a second, not by
an install in the namespace lab after the shared mirror-world cache is rebuilt:
tests/integration/test_el8_recipe.py checks the same on real dnf's installed tree."""

import pytest
from mirrorworld import yumdata

# what each world's recipes run (manifests/: EL7 is docker only, EL8/EL9 docker or containerd)
RUNTIMES = {"yum_packages.yaml": {"docker-ce": "docker"},
            "yum_el8.yaml": {"docker-ce": "docker", "containerd.io": "containerd"}}


@pytest.mark.parametrize("world", sorted(RUNTIMES))
def test_each_runtime_package_installs_the_unit_the_runtime_step_restarts(world):
    packages = yumdata.load(yumdata.HERE / world)["packages"]
    units = RUNTIMES[world]
    checked = [p for p in packages if p.name in units]
    assert {p.name for p in checked} == set(units), world
    missing = ["{}-{}-{}.{}".format(p.name, p.version, p.release, p.arch) for p in checked
               if "/usr/lib/systemd/system/{}.service".format(units[p.name]) not in p.files]
    assert not missing, "{}: no unit file in {}".format(world, missing)
