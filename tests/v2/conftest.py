"""One boot of the cgroup v2 guest for all of tests/v2: guest_scenario.py runs there once
(real v2 groups, the real Go leak, the real watcher) and the tests read what it recorded.

The guest is a real 6.1 kernel under QEMU's software emulation (testinfra.vm): the v2
memory controller, OOM kills and inotify on memory.events are the kernel's own. It runs
~60x slower than the host, so the leaks are slow and nothing here measures latency.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testinfra import vm
from testinfra.gobuild import build_local

REPO = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).resolve().parent / "guest_scenario.py"
GUEST_TIMEOUT = 720.0  # boot ~25 s, two watcher imports ~40-80 s, five leaks ~50 s each


@dataclass
class Scenario:
    out: Path
    results: dict[str, Any]

    def leak(self, name: str) -> dict[str, Any]:
        return self.results["leaks"][name]

    def watcher_log(self, watcher: str) -> list[str]:
        name = self.results["watchers"][watcher]["log"]
        return (self.out / name).read_text(errors="replace").splitlines()

    def log_events(self, watcher: str, event: str, **fields: str) -> list[dict[str, str]]:
        """The watcher's log lines of `event` whose fields include `fields`."""
        found = []
        for line in self.watcher_log(watcher):
            parsed = parse_log_line(line)
            if parsed.get("event") == event and all(parsed.get(k) == v for k, v in fields.items()):
                found.append(parsed)
        return found

    def dumps(self, watcher: str, pid: int) -> list[tuple[Path, Path, dict[str, Any]]]:
        """(profile, metadata file, metadata) of each dump the watcher saved for `pid`."""
        folder = self.out / self.results["watchers"][watcher]["dumps"]
        pairs = []
        for meta_path in sorted(folder.rglob("*.json")):
            metadata = json.loads(meta_path.read_text())
            if metadata["pid"] == pid:
                pairs.append((meta_path.with_suffix(".pb.gz"), meta_path, metadata))
        return pairs

    def inotify_inodes(self, watcher: str) -> set[int]:
        """Every inode the watcher's inotify watched at some point (the kernel's fdinfo)."""
        snapshots = self.results["watchers"][watcher]["inotify_snapshots"]
        return {int(watch["ino"], 16) for snapshot in snapshots for watch in snapshot}


_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_log_line(line: str) -> dict[str, str]:
    return {key: value.strip('"') for key, value in _FIELD.findall(line)}


@pytest.fixture(scope="session")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    reason = vm.vm_unavailable()
    if reason is not None:
        pytest.skip(reason)
    machine = vm.prepare()
    leak = build_local("go-memory-leak", REPO / "examples" / "go-memory-leak")
    out = tmp_path_factory.mktemp("v2-guest")
    result = vm.run_python_in_guest(
        machine, SCENARIO, [str(out), str(leak)], out, timeout=GUEST_TIMEOUT
    )
    results_file = out / "results.json"
    assert result.returncode == 0 and results_file.exists(), (
        f"the guest scenario failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
        f"{result.stderr[-4000:]}\nconsole:\n{result.console[-3000:]}"
    )
    results = json.loads(results_file.read_text())
    results["guest_seconds"] = result.seconds
    print(f"\ncgroup v2 guest: {result.seconds:.0f}s (scenario {results['scenario_seconds']:.0f}s)")
    return Scenario(out, results)
