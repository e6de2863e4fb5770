"""deploy/base is the chart rendered (testinfra/helm_base.py, `make render-base`), not a
second copy: a hand edit of either side fails here until the other is regenerated."""

import shutil
from pathlib import Path

import yaml

from testinfra.helm import template
from testinfra.helm_base import BASE, BASE_VALUES, differences
from testinfra.kustomize import render
from tests.helm.conftest import CERT_MANAGER_API, Objects

DEPLOY = BASE.parent


def _comparable(objects: Objects) -> dict[tuple[str, str], dict]:
    """Objects by kind and name; the defaults file as data (its text is re-indented), pod
    volumes by name (their order means nothing to Kubernetes)."""
    found = {}
    for obj in objects:
        data = obj.get("data") or {}
        if obj["kind"] == "ConfigMap" and "defaults.yaml" in data:
            obj = {**obj, "data": {**data, "defaults.yaml": yaml.safe_load(data["defaults.yaml"])}}
        if obj["kind"] == "Deployment":
            spec = obj["spec"]["template"]["spec"]
            spec["volumes"] = sorted(spec["volumes"], key=lambda volume: volume["name"])
        found[(obj["kind"], obj["metadata"]["name"])] = obj
    return found


def test_deploy_base_is_what_the_chart_renders(helm_built) -> None:
    assert differences() == [], "run `make render-base`"


def test_a_hand_edit_of_deploy_base_is_caught(helm_built, tmp_path: Path) -> None:
    """Guards the test above: it compares every file, and notices extra ones."""
    copy = tmp_path / "base"
    shutil.copytree(BASE, copy)
    assert differences(copy) == []
    deployment = copy / "deployment.yaml"
    deployment.write_text(deployment.read_text().replace("replicas: 2", "replicas: 3"))
    (copy / "extra.yaml").write_text("{}\n")
    assert differences(copy) == [
        "extra.yaml: not rendered from the chart",
        "deployment.yaml: differs",
    ]


def test_kustomize_renders_deploy_the_same_objects_as_helm(helm_built) -> None:
    """`kubectl apply -k deploy/` and the chart (with BASE_VALUES) install the same."""
    assert _comparable(render(DEPLOY)) == _comparable(template(BASE_VALUES))


def test_the_cert_manager_overlay_matches_the_chart_cert_manager_mode(helm_built) -> None:
    """deploy/overlays/cert-manager is still kustomize patches over the base; the chart's
    certificates.mode=cert-manager must install the same objects."""
    overlay = _comparable(render(DEPLOY / "overlays" / "cert-manager"))
    chart = _comparable(
        template([*BASE_VALUES, "certificates.mode=cert-manager"], [CERT_MANAGER_API])
    )
    assert sorted(overlay) == sorted(chart)
    for key, obj in overlay.items():
        # The overlay's Certificates and Issuers lack the base's part-of label.
        labels = chart[key]["metadata"].get("labels", {})
        if "labels" not in obj["metadata"]:
            labels.pop("app.kubernetes.io/part-of", None)
            if not labels:
                chart[key]["metadata"].pop("labels", None)
        assert obj == chart[key], key
