"""The rendered MutatingWebhookConfiguration keeps the contract (DESIGN.md, issue 4)."""

import pytest

from tests.deploy.conftest import container, one
from tests.deploy.selectors import matches


@pytest.fixture(scope="module", params=["base", "cert-manager"])
def hook(request, rendered) -> dict:
    configuration = one(rendered[request.param], "MutatingWebhookConfiguration", "oomdump")
    assert len(configuration["webhooks"]) == 1
    return configuration["webhooks"][0]


def test_calls_the_service_on_mutate(hook, base) -> None:
    service = hook["clientConfig"]["service"]
    assert service == {
        "name": "oomdump-webhook",
        "namespace": "oomdump-system",
        "path": "/mutate",
        "port": 443,
    }
    assert "caBundle" not in hook["clientConfig"]  # filled in by bootstrap / cainjector
    one(base, "Service", service["name"])


def test_policies(hook) -> None:
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert 1 <= hook["timeoutSeconds"] <= 5
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["name"].count(".") >= 2  # the API server wants a fully qualified name


def test_rule_is_pod_create_only(hook) -> None:
    assert hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]


@pytest.mark.parametrize(
    ("labels", "selected"),
    [
        ({"oomdump.io/inject": "enabled"}, True),
        ({"oomdump.io/inject": "enabled", "team": "a"}, True),
        ({}, False),
        ({"oomdump.io/inject": "disabled"}, False),
        ({"oomdump.io/inject": "true"}, False),
    ],
)
def test_namespace_selector_opts_in_by_label(hook, labels, selected) -> None:
    assert matches(hook["namespaceSelector"], labels) is selected


@pytest.mark.parametrize(
    ("labels", "selected"),
    [
        ({}, True),
        ({"app": "x"}, True),
        ({"oomdump.io/inject": "enabled"}, True),
        ({"oomdump.io/inject": "disabled"}, False),
    ],
)
def test_object_selector_skips_opted_out_pods(hook, labels, selected) -> None:
    assert matches(hook["objectSelector"], labels) is selected


def test_the_webhook_never_selects_its_own_pods_or_namespace(hook, base) -> None:
    pod_labels = one(base, "Deployment", "oomdump-webhook")["spec"]["template"]["metadata"][
        "labels"
    ]
    assert not matches(hook["objectSelector"], pod_labels)
    namespace_labels = one(base, "Namespace", "oomdump-system")["metadata"]["labels"]
    assert not matches(hook["namespaceSelector"], namespace_labels)


def test_bootstrap_targets_this_configuration(base) -> None:
    spec = one(base, "Deployment", "oomdump-webhook")["spec"]["template"]["spec"]
    for args in (
        container(spec, "certs-bootstrap", init=True)["args"],
        container(spec, "cert-reconciler")["args"],
    ):
        assert "--webhook-config-name=oomdump" in args
        assert "--service=oomdump-webhook" in args


def test_selector_matcher_is_not_vacuous() -> None:
    with pytest.raises(ValueError, match="unknown selector operator"):
        matches({"matchExpressions": [{"key": "a", "operator": "Near"}]}, {})
    assert matches({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": "1"})
    assert not matches(
        {"matchExpressions": [{"key": "a", "operator": "In", "values": ["2"]}]}, {"a": "1"}
    )
