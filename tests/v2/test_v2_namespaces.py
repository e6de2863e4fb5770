"""On a real cgroup v2 kernel, cgroup namespaces as containerd sets them up: the app in its
own cgroup and mount namespaces with cgroup2 mounted read-only at /sys/fs/cgroup; the
watcher either in the guest's (`brake`) or, as a sidecar container, in its own (`plain`)."""

import pytest

from tests.v2.conftest import Scenario

pytestmark = pytest.mark.v2


@pytest.mark.parametrize("name", ["ctr", "ctr2", "brake_ctr"])
def test_the_container_sees_itself_at_its_cgroup_namespace_root(scenario: Scenario, name: str):
    own, mount = scenario.leak(name)["inside_view"].splitlines()
    assert own == "0::/"
    fields = mount.split()
    assert (fields[3], fields[4]) == ("/", "/sys/fs/cgroup")  # root, mount point
    assert "ro" in fields[5].split(",")


def test_the_watchers_see_the_container_groups_through_their_own_namespaces(scenario):
    watchers = scenario.results["watchers"]
    assert watchers["plain"]["own_cgroup_view"] == "0::/oomdump-v2/sidecar"
    assert watchers["brake"]["own_cgroup_view"] == "0::/"
    assert scenario.leak("ctr")["seen_by_watcher"] == "0::/../ctr"
    assert scenario.leak("brake_ctr")["seen_by_watcher"] == "0::/oomdump-v2/brake_ctr"


def test_a_group_outside_the_watchers_namespace_is_never_taken_for_another(scenario):
    # `host` shares the guest's mount namespace, so its cgroup2 mount's root lies above the
    # sidecar's namespace. A group named `host` at the top (the decoy, 2x the limit) is
    # where dropping the `..` leads. Watching the decoy would judge the leak by a wrong
    # limit: the watcher refuses the group, saying why. (Finding the real group from here
    # would take the target's cgroup namespace, setns: not done.)
    leak = scenario.leak("host")
    assert leak["seen_by_watcher"] == "0::/../host"
    watching = scenario.log_events("plain", "watching", pid=str(leak["pid"]))
    refused = scenario.log_events("plain", "not-watched", pid=str(leak["pid"]))
    assert not watching, scenario.watcher_log("plain")
    assert refused and all("outside every cgroup2 mount" in line["reason"] for line in refused)
