"""Every object `deploy/` renders validates against the Kubernetes OpenAPI schema.

kubernetes-validate checks built-in kinds, strictly (unknown fields fail). cert-manager's
Issuer and Certificate are CRDs, absent from that schema: test_cert_manager_overlay.py
checks their apiVersion, kind and fields by hand.
"""

from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.conftest import TREES

# The API server the end-to-end tests build (testinfra/kubebuild.py), and an older release
# still in common use, so the manifests use no field newer than that.
KUBERNETES_VERSIONS = ["1.37.0", "1.30.0"]
CRD_KINDS = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")}


def built_in(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if (o["apiVersion"], o["kind"]) not in CRD_KINDS]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("tree", sorted(TREES))
def test_every_built_in_object_validates(rendered, tree: str, version: str) -> None:
    objects = built_in(rendered[tree])
    assert objects, f"{tree} rendered no built-in objects"
    failures = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message}")
    assert failures == []  # a kind with no schema raises SchemaNotFoundError instead


def test_the_validator_catches_a_broken_object(base) -> None:
    """Guards the tests above against a validator that accepts anything."""
    service = next(o for o in base if o["kind"] == "Service")
    broken = {**service, "spec": {**service["spec"], "ports": [{"port": "https"}]}}
    with pytest.raises(kubernetes_validate.ValidationError, match="not of type 'integer'"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)
    unknown = {**service, "spec": {**service["spec"], "portz": []}}
    with pytest.raises(kubernetes_validate.ValidationError, match="portz"):
        kubernetes_validate.validate(unknown, KUBERNETES_VERSIONS[0], strict=True)
