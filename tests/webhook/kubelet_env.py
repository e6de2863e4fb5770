"""What the kubelet makes of a container's env: the real expansion code of Kubernetes.

`k8s_expand/main.go` runs k8s.io/kubernetes/third_party/forked/golang/expansion (the code
kubelet_pods.go calls) of the release the e2e tests build, fetched from the Go module
proxy and built once into ~/.cache/oomdump. No kubelet runs here, so this is the piece of
it that decides what `$(VAR)` and `$$` become.
"""

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from testinfra.gobuild import GoBuildError, cached_binary, run_go, source_hash
from testinfra.kubebuild import KUBERNETES_VERSION, kube_wrapper_go_mod

SOURCE = Path(__file__).resolve().parent / "k8s_expand"


def _kubernetes_go_mod() -> str:
    go = shutil.which("go")
    if go is None:
        raise GoBuildError("the `go` toolchain is not on PATH")
    found = subprocess.run(
        [go, "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
        capture_output=True, text=True, check=False, cwd=tempfile.gettempdir(), timeout=600,
    )  # fmt: skip
    if found.returncode != 0:
        raise GoBuildError(f"go mod download k8s.io/kubernetes failed:\n{found.stdout}")
    return Path(json.loads(found.stdout)["GoMod"]).read_text()


def expander() -> Path:
    def build(output: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="oomdump-k8s-expand-") as tmp:
            work = Path(tmp)
            go_mod = kube_wrapper_go_mod(KUBERNETES_VERSION, _kubernetes_go_mod())
            (work / "go.mod").write_text(go_mod.replace("kube-apiserver", "k8s-expand", 1))
            shutil.copy(SOURCE / "main.go", work / "main.go")
            run_go(["mod", "tidy"], cwd=work)
            run_go(["build", "-trimpath", "-o", str(output), "."], cwd=work)

    return cached_binary("k8s-expand", f"{KUBERNETES_VERSION}-{source_hash(SOURCE)}", build)


def container_environment(
    container: dict[str, Any], env_from: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment the container's process starts with (literal `value` entries only;
    `valueFrom` entries come out empty, as nothing resolves them here)."""
    env = [{"name": e["name"], "value": e.get("value", "")} for e in container.get("env", [])]
    request = json.dumps({"envFrom": env_from or {}, "env": env})
    finished = subprocess.run(
        [str(expander())], input=request, capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(finished.stdout)
