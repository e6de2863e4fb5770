"""The chart rendered by the pinned helm (testinfra/helm.py, built and cached on first use)."""

from typing import Any

import pytest

from testinfra.gobuild import GoBuildError
from testinfra.helm import helm_binary, template

Objects = list[dict[str, Any]]
CERT_MANAGER_API = "cert-manager.io/v1"
MONITORING_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)

# Every documented variant: (`--set` values, API versions the cluster is said to have).
VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "defaults": ((), ()),
    "least-privilege": (("privilegeProfile=least-privilege",), ()),
    "native-sidecar": (("sidecarMode=native",), ()),
    "cert-manager": (("certificates.mode=cert-manager",), (CERT_MANAGER_API,)),
    "metrics": (
        ("metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true"),
        MONITORING_APIS,
    ),
    "everything-set": (
        (
            "image.repository=registry.example/oomdump",
            "image.tag=9.9.9",
            "image.pullPolicy=Always",
            "image.pullSecrets[0]=regcred",
            "namespace.create=true",
            "webhook.replicas=3",
            "webhook.podDisruptionBudget.minAvailable=2",
            "webhook.failurePolicy=Fail",
            "webhook.timeoutSeconds=3",
            "critical=85",
            "cooldown=1m30s",
            "watchTime=50ms",
            "detectMode=poll",
            "bucket=team-heap-dumps",
            "prefix=prod/",
            "endpoint=https://minio.example:9000",
            "region=eu-west-1",
            "credentialsSecret=",
            "extraEnv.MEMORY_METRIC=usage",
        ),
        (),
    ),
}

_build_errors: list[str] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build (or find cached) helm before the first test, so a cold build (minutes) does
    not count against one test's timeout."""
    if session.config.option.collectonly:
        return
    if any("tests/helm/" in item.nodeid for item in session.items):
        try:
            helm_binary()
        except GoBuildError as error:
            _build_errors.append(str(error))


@pytest.fixture(scope="session")
def helm_built() -> None:
    if _build_errors:
        pytest.fail(f"building helm failed: {_build_errors[0]}", pytrace=False)


@pytest.fixture(scope="session")
def variants(helm_built: None) -> dict[str, Objects]:
    return {name: template(values, apis) for name, (values, apis) in VARIANTS.items()}


def one(objects: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]
