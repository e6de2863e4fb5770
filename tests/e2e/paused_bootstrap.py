"""`python -m tests.e2e.paused_bootstrap BARRIER -- <python -m certs arguments>`: the real
`python -m certs`, which pauses once, just before it sends its first Secret create, until
the file BARRIER/go exists.

Two replicas started at once race through a real API server only by luck of scheduling;
holding both at the create, after each has seen that no Secret exists, makes the race
certain: both send a create, and the API server answers one of them 409. Nothing else
changes: the requests, their credentials and the answers are real. The pause announces
itself as BARRIER/arrived-<pid>, so the test releases the replicas once all have arrived.
"""

import os
import sys
import time
from pathlib import Path

import certs.kube
from certs.__main__ import main

RELEASE_TIMEOUT = 60.0


def hold_first_create(barrier: Path) -> None:
    original = certs.kube.KubeCluster.create_secret
    held = False

    def create_secret(self: certs.kube.KubeCluster, data: dict[str, bytes]) -> None:
        nonlocal held
        if not held:
            held = True
            (barrier / f"arrived-{os.getpid()}").touch()
            deadline = time.monotonic() + RELEASE_TIMEOUT
            while not (barrier / "go").exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not released within {RELEASE_TIMEOUT:.0f}s")
                time.sleep(0.005)
        original(self, data)

    certs.kube.KubeCluster.create_secret = create_secret  # type: ignore[method-assign]


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        sys.exit(__doc__)
    hold_first_create(Path(sys.argv[1]))
    sys.exit(main(sys.argv[3:]))
