"""On a real cgroup v2 kernel: the watcher's inotify watches each watched group's
memory.events (the kernel's own list of the watcher's inotify marks), the kernel reports
memory.events changes to inotify, and a recreated group (a container restart) is watched
anew on its new files."""

import pytest

from tests.v2.conftest import Scenario
from tests.v2.test_v2_capture import WATCHED

pytestmark = pytest.mark.v2


@pytest.mark.parametrize("name", WATCHED)
def test_inotify_is_armed_on_the_groups_memory_events(scenario: Scenario, name: str):
    leak = scenario.leak(name)
    assert leak["memory_events_ino"] in scenario.inotify_inodes(WATCHED[name])


@pytest.mark.parametrize("name", WATCHED)
def test_the_kernel_reports_memory_events_changes_to_inotify(scenario: Scenario, name: str):
    # memory.events' `max` and `oom_kill` counters rose on the way to the kill; each change
    # is an IN_MODIFY on the file, which is what wakes the watcher.
    leak = scenario.leak(name)
    assert leak["events_after"]["max"] > leak["events_before"]["max"]
    assert scenario.results["inotify_modifies"].get(name, 0) > 0


def test_a_recreated_group_is_watched_again_on_its_new_files(scenario: Scenario):
    first, second = scenario.leak("ctr"), scenario.leak("ctr2")
    assert first["group"] == second["group"]
    assert first["memory_events_ino"] != second["memory_events_ino"]  # a new group
    assert second["started_monotonic"] > scenario.results["ctr_group_recreated_monotonic"]
    assert second["memory_events_ino"] in scenario.inotify_inodes("plain")
    assert scenario.log_events("plain", "watching", pid=str(second["pid"]))
    assert scenario.dumps("plain", second["pid"])
