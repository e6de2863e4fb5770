"""The README's promise, held against arbitrary bodies: `/mutate` answers an
AdmissionReview (200) or refuses the body with a 400 and a message; never a 5xx.

Bodies go to the real server (`python -m webhook` under uvicorn, over TLS).
"""

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonpatch
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.webhook.helpers import JSON, metric
from tests.webhook.server import RunningWebhook

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=6)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
names = st.one_of(st.sampled_from(["app", "oomdump-sidecar", "oomdump-dumps"]), json_values)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, json_values)


items = st.dictionaries(st.sampled_from(["name", "image", "emptyDir", "restartPolicy"]), names)
pod_like = st.fixed_dictionaries(
    {},
    optional={
        "metadata": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": names,
                    "namespace": names,
                    "annotations": maybe(
                        st.dictionaries(
                            st.sampled_from(
                                ["oomdump.io/prefix", "oomdump.io/critical", "oomdump.io/status",
                                 "oomdump.io/inject", "x"]
                            ),
                            st.one_of(st.text(max_size=8), json_values),
                        )
                    ),
                    "labels": maybe(st.dictionaries(st.sampled_from(["oomdump.io/inject"]), names)),
                },
            )
        ),
        "spec": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "containers": maybe(st.lists(maybe(items), max_size=3)),
                    "initContainers": maybe(st.lists(maybe(items), max_size=2)),
                    "volumes": maybe(st.lists(maybe(items), max_size=3)),
                    "hostPID": json_values,
                    "shareProcessNamespace": json_values,
                    "os": maybe(st.fixed_dictionaries({"name": names})),
                },
            )
        ),
    },
)  # fmt: skip
reviews = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
        | json_values,
        "kind": st.just("AdmissionReview") | json_values,
        "request": maybe(
            st.fixed_dictionaries(
                {
                    "uid": st.text(min_size=1, max_size=8) | json_values,
                    "kind": maybe(
                        st.fixed_dictionaries(
                            {"group": st.just("") | json_values, "kind": st.just("Pod") | names}
                        )
                    ),
                    "operation": st.sampled_from(["CREATE", "UPDATE"]) | json_values,
                    "object": st.one_of(pod_like, json_values),
                },
                optional={"namespace": names, "name": names},
            )
        ),
    }
)


def valid_review() -> dict[str, Any]:
    pod = {
        "metadata": {"name": "web", "annotations": {"oomdump.io/prefix": "p/"}, "labels": {}},
        "spec": {
            "containers": [{"name": "app", "image": "app"}],
            "initContainers": [{"name": "init", "image": "init"}],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "os": {"name": "linux"},
        },
    }
    request = {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE",
        "namespace": "shop",
        "name": "web",
        "object": pod,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


# Where one field of an otherwise valid review is replaced by arbitrary JSON: each of these
# is read by the decoder or the injector.
FIELDS = [
    ("apiVersion",), ("kind",), ("request",), ("request", "uid"), ("request", "kind"),
    ("request", "kind", "kind"), ("request", "kind", "group"), ("request", "operation"),
    ("request", "namespace"), ("request", "name"), ("request", "object"),
    ("request", "object", "metadata"), ("request", "object", "metadata", "namespace"),
    ("request", "object", "metadata", "annotations"),
    ("request", "object", "metadata", "annotations", "oomdump.io/prefix"),
    ("request", "object", "metadata", "annotations", "oomdump.io/status"),
    ("request", "object", "metadata", "labels"),
    ("request", "object", "metadata", "labels", "oomdump.io/inject"),
    ("request", "object", "spec"), ("request", "object", "spec", "containers"),
    ("request", "object", "spec", "containers", 0),
    ("request", "object", "spec", "containers", 0, "name"),
    ("request", "object", "spec", "initContainers"),
    ("request", "object", "spec", "initContainers", 0, "name"),
    ("request", "object", "spec", "volumes"), ("request", "object", "spec", "volumes", 0),
    ("request", "object", "spec", "volumes", 0, "name"),
    ("request", "object", "spec", "hostPID"), ("request", "object", "spec", "os"),
    ("request", "object", "spec", "os", "name"),
    ("request", "object", "spec", "shareProcessNamespace"),
]  # fmt: skip


# Objects and arrays as often as scalars: the shapes a field's reader is least ready for.
replacements = st.one_of(
    scalars, st.lists(json_values, max_size=2), st.dictionaries(st.text(max_size=4), json_values)
)


@st.composite
def mutated_reviews(draw: st.DrawFn) -> dict[str, Any]:
    review = valid_review()
    for path in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3)):
        parent: Any = review
        for step in path[:-1]:
            try:
                parent = parent[step]
            except (KeyError, IndexError, TypeError):
                break
        else:
            key = path[-1]
            in_dict = isinstance(parent, dict) and isinstance(key, str)
            in_list = isinstance(parent, list) and isinstance(key, int) and key < len(parent)
            if in_dict or in_list:
                parent[key] = draw(replacements)
    return review


bodies = st.one_of(
    mutated_reviews().map(lambda review: json.dumps(review).encode()),
    mutated_reviews().map(lambda review: json.dumps(review).encode()),
    reviews.map(lambda review: json.dumps(review).encode()),
    st.binary(max_size=40),
)


@pytest.fixture(scope="module")
def client(webhook: RunningWebhook) -> Iterator[httpx.Client]:
    with webhook.client() as shared:
        yield shared


def with_field(path: tuple[Any, ...], value: Any) -> bytes:
    review = valid_review()
    parent: Any = review
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return json.dumps(review).encode()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies)
# Found before (issue 10): a volume name that is not a string made the injector raise.
@example(body=with_field(("request", "object", "spec", "volumes", 0, "name"), {"a": 1}))
@example(body=with_field(("request", "object", "spec", "volumes", 0, "name"), ["x"]))
@example(body=with_field(("request", "object", "spec", "containers"), {"name": "app"}))
def test_mutate_never_answers_5xx(client: httpx.Client, body: bytes) -> None:
    reply = client.post("/mutate", content=body, headers=JSON)
    assert reply.status_code in (200, 400), (reply.status_code, reply.text[:300])
    answer = reply.json()
    if reply.status_code == 400:
        assert answer["error"] == "malformed" and answer["message"]
        return
    sent = json.loads(body)
    assert answer["apiVersion"] == sent["apiVersion"]
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == sent["request"]["uid"]
    assert isinstance(response["allowed"], bool)
    assert not any("internal-error" in text for text in response.get("warnings", []))
    if "patch" in response:
        patch = json.loads(base64.b64decode(response["patch"]))
        assert isinstance(jsonpatch.apply_patch(sent["request"]["object"], patch), dict)


def test_no_review_hit_the_internal_error_fallback(webhook: RunningWebhook) -> None:
    """Run after the property test (same module server): the fallback stayed unused."""
    with webhook.client() as client:
        text = client.get("/metrics").text
    assert metric(text, "oomdump_webhook_skips_total", reason="internal-error") == 0
    assert "Traceback" not in webhook.log_text()
