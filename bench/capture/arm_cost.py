"""What arming one cgroup v1 memory threshold costs the thread that does it.

    sudo .venv/bin/python bench/capture/arm_cost.py [--count 20]

Writing to `cgroup.event_control` waits for an RCU grace period in the kernel, so the
watch loop, which arms thresholds itself (a new process: two, with the page-cache gap's),
is blocked that long. Prints each arm's wall time and the median.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO)]

from sidecar.cgroup import MemoryCgroup  # noqa: E402
from sidecar.cgroupfs import CgroupDir  # noqa: E402
from sidecar.detection.thresholds import Registration, arm  # noqa: E402
from sidecar.detection.watch import Watch  # noqa: E402
from testinfra.cgroups import MiB, cgroup_v1_unavailable, memory_cgroup  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    reason = cgroup_v1_unavailable()
    if reason is not None:
        print(f"arm_cost needs real cgroup v1 memory groups: {reason}", file=sys.stderr)
        return 2
    registrations: list[Registration] = []
    took_ms: list[float] = []
    with memory_cgroup(256 * MiB, prefix="oomdump-bench") as group:
        held = MemoryCgroup(1, str(group.path), CgroupDir.at(group.path))
        try:
            for step in range(args.count):
                started = time.perf_counter()
                registrations.append(arm(Watch("bench", held, (100 + step) * MiB)))
                took_ms.append(1000 * (time.perf_counter() - started))
        finally:
            for registration in registrations:
                registration.close()
            held.close()
    print("arm ms:", " ".join(f"{ms:.1f}" for ms in took_ms))
    print(f"median {statistics.median(took_ms):.1f} ms, max {max(took_ms):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
