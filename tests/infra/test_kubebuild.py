"""The wrapper module that builds kube-apiserver from the Go module proxy."""

import re

import pytest

from testinfra.gobuild import GoBuildError
from testinfra.kubebuild import kube_wrapper_go_mod, staging_modules, staging_version

KUBERNETES_GO_MOD = """module k8s.io/kubernetes

go 1.26.0

require (
\tgithub.com/blang/semver/v4 v4.0.0
\tk8s.io/api v0.0.0
\tk8s.io/apiserver v0.0.0
\tk8s.io/klog/v2 v2.140.0
\tk8s.io/utils v0.0.0-20260626114624-be93311217bd
)

require (
\tk8s.io/kms v0.0.0 // indirect
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
)
"""


def test_staging_version_maps_the_minor_and_patch() -> None:
    assert staging_version("v1.37.2") == "v0.37.2"
    assert staging_version("v1.36.0-rc.1") == "v0.36.0-rc.1"


def test_staging_version_refuses_other_tags() -> None:
    with pytest.raises(ValueError, match=re.escape("not a Kubernetes 1.x release tag: 'v2.0.0'")):
        staging_version("v2.0.0")


def test_staging_modules_are_those_required_at_v0_0_0() -> None:
    # `// indirect` requirements are staging modules too.
    assert staging_modules(KUBERNETES_GO_MOD) == ["k8s.io/api", "k8s.io/apiserver", "k8s.io/kms"]


def test_wrapper_replaces_each_staging_module_with_its_published_tag() -> None:
    go_mod = kube_wrapper_go_mod("v1.37.2", KUBERNETES_GO_MOD)
    assert "require k8s.io/kubernetes v1.37.2" in go_mod
    for module in ("k8s.io/api", "k8s.io/apiserver", "k8s.io/kms"):
        assert f"\t{module} => {module} v0.37.2\n" in go_mod
    assert "k8s.io/utils =>" not in go_mod
    assert "./staging" not in go_mod


def test_wrapper_refuses_a_go_mod_without_staging_modules() -> None:
    with pytest.raises(GoBuildError, match="no staging modules"):
        kube_wrapper_go_mod("v1.37.2", "module k8s.io/kubernetes\n")
