"""Pod Security Standards verdicts from the library the kube-apiserver's PodSecurity
admission plugin runs (k8s.io/pod-security-admission, `pod_security/main.go`), built
once from the Go module proxy into ~/.cache/oomdump."""

import json
import subprocess
from pathlib import Path
from typing import Any

from testinfra.gobuild import build_local

SOURCE = Path(__file__).resolve().parent / "pod_security"


def violations(pod: dict[str, Any]) -> dict[str, list[str]]:
    """{"baseline": [...], "restricted": [...]}: why each level forbids the pod (empty:
    allowed), at the latest policy version."""
    binary = build_local("pod-security", SOURCE)
    finished = subprocess.run(
        [str(binary)], input=json.dumps(pod), capture_output=True, text=True, check=True,
        timeout=60,
    )  # fmt: skip
    return json.loads(finished.stdout)
