"""Build kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and etcd from the
Go module proxy, cached by version.

k8s.io/kubernetes requires its staging modules (k8s.io/api, apimachinery, apiserver, ...)
at v0.0.0 and replaces them with folders of its own repository, and a dependency's replaces
do not apply to the module that requires it. The wrapper module therefore replaces every
one of them with the published v0.<minor>.<patch> tag, derived from the pinned release's
own go.mod, so bumping KUBERNETES_VERSION is the only edit a new release needs.
"""

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from testinfra.gobuild import CACHE_ROOT, GoBuildError, build_from_module

KUBERNETES_VERSION = "v1.37.2"
# The kubelet is older than the control plane (the version skew policy allows three minors):
# 1.35 is the last release that supports containerd 1.x, the one Debian ships here, and it
# still runs on cgroup v1 once told `failCgroupV1: false`.
KUBELET_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"

_STAGING_REQUIRE = re.compile(
    r"^\s*(k8s\.io/[\w.\-/]+)\s+v0\.0\.0\s*(?://\s*indirect\s*)?$", re.MULTILINE
)


def staging_version(kubernetes_version: str) -> str:
    """v1.37.2 -> v0.37.2: the tag the staging modules are published under."""
    match = re.fullmatch(r"v1\.(\d+\.\d+.*)", kubernetes_version)
    if match is None:
        raise ValueError(f"not a Kubernetes 1.x release tag: {kubernetes_version!r}")
    return f"v0.{match.group(1)}"


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The modules k8s.io/kubernetes's go.mod requires at the placeholder version v0.0.0."""
    return sorted(set(_STAGING_REQUIRE.findall(kubernetes_go_mod)))


def kube_wrapper_go_mod(kubernetes_version: str, kubernetes_go_mod: str) -> str:
    """The wrapper go.mod: require k8s.io/kubernetes, replace each staging module."""
    staging = staging_version(kubernetes_version)
    modules = staging_modules(kubernetes_go_mod)
    if not modules:
        raise GoBuildError(f"k8s.io/kubernetes {kubernetes_version}: no staging modules found")
    replaces = "\n".join(f"\t{module} => {module} {staging}" for module in modules)
    return (
        "module oomdump.test/kube-apiserver\n\n"
        "go 1.26.0\n\n"
        f"require k8s.io/kubernetes {kubernetes_version}\n\n"
        f"replace (\n{replaces}\n)\n"
    )


def _download_go_mod(module: str, version: str) -> str:
    go = shutil.which("go")
    if go is None:
        raise GoBuildError("the `go` toolchain is not on PATH")
    result = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tempfile.gettempdir(),
    )
    if result.returncode != 0:
        raise GoBuildError(f"go mod download {module}@{version} failed:\n{result.stdout}")
    return Path(json.loads(result.stdout)["GoMod"]).read_text()


def _cached(name: str, key: str) -> Path | None:
    binary = CACHE_ROOT / f"{name}-{key}" / name
    return binary if binary.exists() else None


def kube_binary(name: str, version: str = KUBERNETES_VERSION) -> Path:
    """The cached `k8s.io/kubernetes/cmd/<name>` of `version`, built on first use from the
    wrapper module (one wrapper per version, so the module cache is shared between them)."""
    cached = _cached(name, version)
    if cached is not None:
        return cached
    go_mod = kube_wrapper_go_mod(version, _download_go_mod("k8s.io/kubernetes", version))
    return build_from_module(name, version, go_mod, f"k8s.io/kubernetes/cmd/{name}")


def kube_apiserver_binary() -> Path:
    """The cached kube-apiserver of KUBERNETES_VERSION, built on first use."""
    return kube_binary("kube-apiserver")


def kube_controller_manager_binary() -> Path:
    """The cached kube-controller-manager of KUBERNETES_VERSION, built on first use."""
    return kube_binary("kube-controller-manager")


def kube_scheduler_binary() -> Path:
    """The cached kube-scheduler of KUBERNETES_VERSION, built on first use."""
    return kube_binary("kube-scheduler")


def kubelet_binary() -> Path:
    """The cached kubelet of KUBELET_VERSION, built on first use."""
    return kube_binary("kubelet", KUBELET_VERSION)


def etcd_binary() -> Path:
    """The cached etcd server of ETCD_VERSION, built on first use."""
    go_mod = (
        "module oomdump.test/etcd\n\n"
        "go 1.26.0\n\n"
        f"require go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n"
    )
    return build_from_module("etcd", ETCD_VERSION, go_mod, "go.etcd.io/etcd/server/v3")


def kube_proxy_binary() -> Path:
    """The cached kube-proxy of KUBELET_VERSION (a node component, versioned with the
    kubelet), built on first use."""
    return kube_binary("kube-proxy", KUBELET_VERSION)
