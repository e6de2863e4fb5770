"""The pure parts of the e2e harness: rewriting deploy/'s webhook configuration, CLI flags."""

import base64

import pytest

from testinfra.cluster import main as cluster_main
from testinfra.webhook_server import pointed_at, rendered_webhook_configuration

RENDERED = {
    "apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "MutatingWebhookConfiguration",
    "metadata": {"name": "oomdump"},
    "webhooks": [
        {
            "name": "inject.oomdump.io",
            "clientConfig": {
                "service": {
                    "name": "oomdump-webhook",
                    "namespace": "oomdump-system",
                    "path": "/mutate",
                }
            },
            "namespaceSelector": {"matchLabels": {"oomdump.io/inject": "enabled"}},
            "failurePolicy": "Ignore",
            "timeoutSeconds": 5,
        }
    ],
}


def test_pointed_at_swaps_the_client_config_and_keeps_the_rest() -> None:
    result = pointed_at(RENDERED, "https://localhost:1234/mutate", b"PEM", timeout_seconds=3)

    hook = result["webhooks"][0]
    assert hook["clientConfig"] == {
        "url": "https://localhost:1234/mutate",
        "caBundle": base64.b64encode(b"PEM").decode(),
    }
    assert hook["timeoutSeconds"] == 3
    assert hook["namespaceSelector"] == RENDERED["webhooks"][0]["namespaceSelector"]
    assert hook["failurePolicy"] == "Ignore"
    assert "service" in RENDERED["webhooks"][0]["clientConfig"], "the input is not modified"


def test_pointed_at_never_lengthens_the_timeout() -> None:
    result = pointed_at(RENDERED, "https://localhost:1/mutate", b"PEM", timeout_seconds=30)
    assert result["webhooks"][0]["timeoutSeconds"] == 5


def test_exactly_one_webhook_configuration_is_expected() -> None:
    assert rendered_webhook_configuration([{"kind": "Service"}, RENDERED]) is RENDERED
    with pytest.raises(ValueError, match="renders 0 MutatingWebhookConfigurations, not 1"):
        rendered_webhook_configuration([{"kind": "Service"}])


def test_cluster_cli_refuses_a_bad_duration(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cluster_main(["--for", "ten minutes"])
    assert exited.value.code == 2
    assert "--for: 'ten minutes' is not a Go-style duration" in capsys.readouterr().err
