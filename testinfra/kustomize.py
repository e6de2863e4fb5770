"""kustomize, built once from the Go module proxy, to render `deploy/` the way kubectl does.

There is no kubectl on the build machine; `kubectl kustomize` embeds the same kustomize
library, so the pinned release below renders exactly what `kubectl kustomize deploy/`
(and `kubectl apply -k`) would.
"""

import subprocess
from pathlib import Path

import yaml

from testinfra.gobuild import build_from_module

# v5.8.3 needs Go >= 1.27; v5.8.2 builds with the Go 1.26 the project requires here.
KUSTOMIZE_VERSION = "v5.8.2"
KUSTOMIZE_PACKAGE = "sigs.k8s.io/kustomize/kustomize/v5"

_GO_MOD = f"""module oomdump.local/kustomize-build

go 1.26

require {KUSTOMIZE_PACKAGE} {KUSTOMIZE_VERSION}
"""


class KustomizeError(RuntimeError):
    """`kustomize build` refused the folder; the message carries its output."""


def kustomize_binary() -> Path:
    """The cached kustomize binary, built on first use (1-4 minutes cold, by machine load)."""
    return build_from_module("kustomize", KUSTOMIZE_VERSION, _GO_MOD, KUSTOMIZE_PACKAGE)


def render_text(path: Path) -> str:
    """The multi-document YAML that `kustomize build PATH` prints."""
    result = subprocess.run(
        [str(kustomize_binary()), "build", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise KustomizeError(f"kustomize build {path} failed:\n{result.stderr}{result.stdout}")
    return result.stdout


def render(path: Path) -> list[dict]:
    """Every object `kustomize build PATH` renders, in its output order."""
    return [doc for doc in yaml.safe_load_all(render_text(path)) if doc]
