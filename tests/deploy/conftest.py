"""`deploy/` rendered once per session by the pinned kustomize (built and cached on first use)."""

from pathlib import Path
from typing import Any

import pytest

from testinfra.kustomize import render

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TREES = {
    "base": DEPLOY,
    "cert-manager": DEPLOY / "overlays" / "cert-manager",
    "examples": DEPLOY / "examples",
}

Objects = list[dict[str, Any]]


@pytest.fixture(scope="session")
def rendered() -> dict[str, Objects]:
    return {name: render(path) for name, path in TREES.items()}


@pytest.fixture(scope="session")
def base(rendered: dict[str, Objects]) -> Objects:
    return rendered["base"]


@pytest.fixture(scope="session")
def cert_manager(rendered: dict[str, Objects]) -> Objects:
    return rendered["cert-manager"]


@pytest.fixture(scope="session")
def examples(rendered: dict[str, Objects]) -> Objects:
    return rendered["examples"]


def one(objects: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    """The single object of `kind` (and `name`), failing clearly when there is not one."""
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(pod_spec: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    key = "initContainers" if init else "containers"
    found = [c for c in pod_spec.get(key, []) if c["name"] == name]
    assert len(found) == 1, f"expected one {key} entry named {name}"
    return found[0]
