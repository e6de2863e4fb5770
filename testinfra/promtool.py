"""promtool, built once from the Go module proxy, to check and unit-test oomdump's alerts.

The binary lands in `~/.cache/oomdump/promtool-<version>/promtool` like the other builds
(testinfra/gobuild.py). Prometheus' module versions are v0.<major><minor>.<patch>:
v0.316.0 is Prometheus 3.16.0.
"""

import subprocess
from collections.abc import Sequence
from pathlib import Path

from testinfra.gobuild import build_from_module

PROMETHEUS_VERSION = "v0.316.0"
PROMTOOL_PACKAGE = "github.com/prometheus/prometheus/cmd/promtool"

_GO_MOD = f"""module oomdump.local/promtool-build

go 1.26

require github.com/prometheus/prometheus {PROMETHEUS_VERSION}
"""


class PromtoolError(RuntimeError):
    """promtool exited non-zero; the message carries its output."""


def promtool_binary() -> Path:
    """The cached promtool, built on first use."""
    return build_from_module("promtool", PROMETHEUS_VERSION, _GO_MOD, PROMTOOL_PACKAGE)


def run_promtool(
    args: Sequence[str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`promtool ARGS` (in `cwd`), raising PromtoolError with its output when it fails."""
    result = subprocess.run(
        [str(promtool_binary()), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise PromtoolError(
            f"promtool {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result
