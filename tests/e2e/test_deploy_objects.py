"""The real API server accepts every object `deploy/` renders (server-side dry run)."""

from typing import Any

import pytest
from kubernetes import utils
from kubernetes.client.exceptions import ApiException

from testinfra.cluster import Cluster

pytestmark = pytest.mark.e2e


def test_api_server_accepts_every_rendered_object(
    cluster: Cluster, deploy_objects: list[dict[str, Any]]
) -> None:
    api = cluster.api_client()
    # Namespaced objects can only be dry-run into a namespace that exists.
    for namespace in (o for o in deploy_objects if o["kind"] == "Namespace"):
        try:
            utils.create_from_dict(api, namespace)
        except utils.FailToCreateError as error:
            if not all(
                isinstance(e, ApiException) and e.status == 409 for e in error.api_exceptions
            ):
                raise
    refused = []
    for obj in deploy_objects:
        if obj["kind"] == "Namespace":
            continue
        if obj["kind"] == "MutatingWebhookConfiguration":
            # The webhook fixture may have registered this name already.
            obj = {**obj, "metadata": {**obj["metadata"], "name": "oomdump-dry-run"}}
        try:
            utils.create_from_dict(api, obj, dry_run="All")
        except utils.FailToCreateError as error:
            refused += [
                f"{obj['kind']}/{obj['metadata']['name']}: {e}" for e in error.api_exceptions
            ]
    assert refused == []
