"""helm, built once from the Go module proxy, to lint, render and install deploy/helm/oomdump.

The binary lands in `~/.cache/oomdump/helm-<version>/helm` like the other builds
(testinfra/gobuild.py): file-locked, so parallel runs share one build, never in the
repository.
"""

import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from testinfra.gobuild import cached_binary, run_go

HELM_VERSION = "v3.22.0"
HELM_PACKAGE = "helm.sh/helm/v3/cmd/helm"
CHART = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "oomdump"

_GO_MOD = f"""module oomdump.local/helm-build

go 1.26

require helm.sh/helm/v3 {HELM_VERSION}
"""


class HelmError(RuntimeError):
    """helm exited non-zero; the message carries its output."""


def _build(output: Path) -> None:
    """helm as its own Makefile links it: without the version variables it reports
    Kubernetes v1.20 to `helm template` and refuses the chart's kubeVersion."""
    with tempfile.TemporaryDirectory(prefix="oomdump-helm-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text(_GO_MOD)
        (work / "tools.go").write_text(
            f'//go:build tools\n\npackage tools\n\nimport _ "{HELM_PACKAGE}"\n'
        )
        run_go(["mod", "tidy"], cwd=work)
        major, minor = _kubernetes_version((work / "go.mod").read_text())
        flags = [
            f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
            f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor={major}",
            f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={minor}",
            f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor={major}",
            f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={minor}",
        ]
        run_go(
            ["build", "-trimpath", "-ldflags", " ".join(flags), "-o", str(output), HELM_PACKAGE],
            cwd=work,
        )


def _kubernetes_version(go_mod: str) -> tuple[int, int]:
    """The Kubernetes release of the client-go that `go mod tidy` pinned: v0.35.1 is 1.35,
    as helm's Makefile reckons."""
    found = re.search(r"^\s*k8s\.io/client-go v0\.([0-9]+)\.", go_mod, re.MULTILINE)
    if found is None:
        raise RuntimeError("helm's go.mod pins no k8s.io/client-go")
    return 1, int(found.group(1))


def helm_binary() -> Path:
    """The cached helm binary, built on first use (about 5 minutes cold on 2 busy cores)."""
    return cached_binary("helm", HELM_VERSION, _build)


def run_helm(
    args: Sequence[str],
    env: dict[str, str] | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """`helm ARGS`, raising HelmError with its output when it fails."""
    result = subprocess.run(
        [str(helm_binary()), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=env,
    )
    if result.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed:\n{result.stderr}{result.stdout}")
    return result


def template_text(
    values: Sequence[str] = (),
    api_versions: Sequence[str] = (),
    namespace: str = "oomdump-system",
    release: str = "oomdump",
    set_string: Sequence[str] = (),
    kube_version: str | None = None,
) -> str:
    """What `helm template` prints for the chart; `values` are `--set` expressions,
    `set_string` `--set-string` ones."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    if kube_version:
        args += ["--kube-version", kube_version]
    for value in values:
        args += ["--set", value]
    for value in set_string:
        args += ["--set-string", value]
    for version in api_versions:
        args += ["--api-versions", version]
    return run_helm(args).stdout


def template(
    values: Sequence[str] = (),
    api_versions: Sequence[str] = (),
    namespace: str = "oomdump-system",
    set_string: Sequence[str] = (),
    kube_version: str | None = None,
) -> list[dict]:
    """Every object `helm template` renders, in its output order."""
    text = template_text(
        values, api_versions, namespace, set_string=set_string, kube_version=kube_version
    )
    return [doc for doc in yaml.safe_load_all(text) if doc]
