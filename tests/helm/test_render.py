"""Every documented variant of the chart renders objects the Kubernetes schema accepts, and
each value reaches the object it is documented to change."""

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from oomdump import __version__
from testinfra.helm import template
from tests.deploy.pod_security import violations
from tests.helm.conftest import CERT_MANAGER_API, MONITORING_APIS, VARIANTS, Objects, one
from webhook.config import parse_defaults

REPO = Path(__file__).resolve().parents[2]
# The oldest Kubernetes the README claims (>= 1.27) and the API server tests/e2e builds.
KUBERNETES_VERSIONS = ["1.27.0", "1.37.0"]
CRD_KINDS = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


def pod_spec(objects: Objects) -> dict[str, Any]:
    return one(objects, "Deployment", "oomdump-webhook")["spec"]["template"]["spec"]


def env_of(objects: Objects, container: str = "webhook") -> dict[str, Any]:
    (found,) = [c for c in pod_spec(objects)["containers"] if c["name"] == container]
    return {e["name"]: e.get("value") for e in found["env"]}


def defaults_of(objects: Objects) -> dict[str, Any]:
    return yaml.safe_load(one(objects, "ConfigMap")["data"]["defaults.yaml"])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_built_in_object_validates(variants, variant: str, version: str) -> None:
    objects = [o for o in variants[variant] if (o["apiVersion"], o["kind"]) not in CRD_KINDS]
    assert len(objects) >= 8, variant
    failures = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message}")
    assert failures == []


def test_the_validator_catches_a_broken_render(variants) -> None:
    """Guards the test above against a validator that accepts anything."""
    deployment = one(variants["defaults"], "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError, match="not of type 'integer'"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_gives_defaults_the_webhook_accepts(variants, variant: str) -> None:
    text = one(variants[variant], "ConfigMap", "oomdump-sidecar-defaults")["data"]["defaults.yaml"]
    parsed = parse_defaults(text, f"{variant} defaults.yaml")
    assert parsed.profile == ("least-privilege" if variant == "least-privilege" else "privileged")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_webhook_pod_meets_the_restricted_pod_security_level(variants, variant) -> None:
    """The release namespace is labelled `enforce: restricted` (namespace.labels)."""
    deployment = one(variants[variant], "Deployment")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
    pod["spec"] = deployment["spec"]["template"]["spec"]
    assert violations(pod)["restricted"] == []


def test_each_value_reaches_its_object(variants) -> None:
    objects = variants["everything-set"]
    image = "registry.example/oomdump:9.9.9"
    spec = pod_spec(objects)
    for item in spec["initContainers"] + spec["containers"]:
        assert (item["image"], item["imagePullPolicy"]) == (image, "Always"), item["name"]
    assert env_of(objects)["SIDECAR_IMAGE"] == image
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert one(objects, "Namespace")["metadata"]["labels"]["oomdump.io/inject"] == "disabled"
    assert one(objects, "Deployment")["spec"]["replicas"] == 3
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    (hook,) = one(objects, "MutatingWebhookConfiguration")["webhooks"]
    assert (hook["failurePolicy"], hook["timeoutSeconds"]) == ("Fail", 3)
    defaults = defaults_of(objects)
    assert defaults["env"] == {
        "CRITICAL": "85",
        "COOLDOWN": "1m30s",
        "WATCH_TIME": "50ms",
        "DETECT_MODE": "poll",
        "BUCKET": "team-heap-dumps",
        "S3_PREFIX": "prod/",
        "S3_ENDPOINT_URL": "https://minio.example:9000",
        "AWS_REGION": "eu-west-1",
        "MEMORY_METRIC": "usage",
    }
    assert "envFrom" not in defaults  # credentialsSecret empty: IRSA only


def test_the_defaults_match_the_webhook_built_in_ones(variants) -> None:
    """Untouched values give the webhook's own defaults, the image tag the appVersion."""
    objects = variants["defaults"]
    defaults = defaults_of(objects)
    parsed = parse_defaults(yaml.safe_dump(defaults), "defaults")
    built_in = parse_defaults("", "built-in")
    assert (parsed.env, parsed.resources, parsed.profile) == (
        built_in.env,
        built_in.resources,
        built_in.profile,
    )
    assert parsed.env_from == [{"secretRef": {"name": "oomdump-s3", "optional": True}}]
    chart = yaml.safe_load((REPO / "deploy" / "helm" / "oomdump" / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    assert env_of(objects)["SIDECAR_IMAGE"] == f"ghcr.io/oomdump/oomdump:{__version__}"
    assert not any(o["kind"] == "Namespace" for o in objects)  # --create-namespace makes it
    one(objects, "Secret", "oomdump-webhook-tls")  # owned, so uninstall removes it
    assert "imagePullPolicy" not in pod_spec(objects)["containers"][0]


def test_sidecar_mode_and_privilege_profile(variants) -> None:
    assert env_of(variants["defaults"])["SIDECAR_MODE"] == "container"
    assert env_of(variants["native-sidecar"])["SIDECAR_MODE"] == "native"
    assert defaults_of(variants["least-privilege"])["privilegeProfile"] == "least-privilege"
    assert "DETECT_MODE" not in defaults_of(variants["least-privilege"])["env"]


def test_cert_manager_mode_drops_the_bootstrap_and_its_rights(variants) -> None:
    objects = variants["cert-manager"]
    spec = pod_spec(objects)
    assert "initContainers" not in spec
    assert [c["name"] for c in spec["containers"]] == ["webhook"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert set(volumes) == {"certs", "sidecar-defaults", "tmp", "notice-credentials"}
    assert volumes["certs"]["secret"]["secretName"] == "oomdump-webhook-tls"
    names = [o["metadata"]["name"] for o in objects if o["kind"].endswith(("Role", "Binding"))]
    assert names == ["oomdump-webhook-notices"] * 2
    assert not any(o["kind"] == "Secret" for o in objects)  # cert-manager writes it
    configuration = one(objects, "MutatingWebhookConfiguration")
    annotations = configuration["metadata"]["annotations"]
    assert annotations["cert-manager.io/inject-ca-from"] == "oomdump-system/oomdump-webhook-tls"
    serving = one(objects, "Certificate", "oomdump-webhook-tls")
    assert serving["spec"]["secretName"] == "oomdump-webhook-tls"
    assert "oomdump-webhook.oomdump-system.svc" in serving["spec"]["dnsNames"]
    assert {o["apiVersion"] for o in objects if o["kind"] in {"Issuer", "Certificate"}} == {
        CERT_MANAGER_API
    }


def test_metrics_objects_only_when_enabled_and_their_crds_exist(variants) -> None:
    kinds = {"ServiceMonitor", "PrometheusRule"}
    assert not kinds & {o["kind"] for o in variants["defaults"]}
    assert kinds <= {o["kind"] for o in variants["metrics"]}
    enabled = VARIANTS["metrics"][0]
    assert not kinds & {o["kind"] for o in template(enabled)}  # no CRDs: nothing rendered
    assert not kinds & {o["kind"] for o in template((), MONITORING_APIS)}  # CRDs, not enabled


def test_service_monitor_scrapes_the_webhook_service(variants) -> None:
    objects = variants["metrics"]
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service", "oomdump-webhook")
    for key, value in monitor["spec"]["selector"]["matchLabels"].items():
        assert service["metadata"]["labels"][key] == value
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert (endpoint["scheme"], endpoint["path"]) == ("https", "/metrics")
    assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": "oomdump-webhook-tls", "key": "ca.crt"}


def test_alert_rules_use_metrics_oomdump_serves(variants) -> None:
    rule = one(variants["metrics"], "PrometheusRule")
    sources = "".join((REPO / p).read_text() for p in ("sidecar/metrics.py", "webhook/metrics.py"))
    served = {name.removesuffix("_total") for name in re.findall(r'"(oomdump_[a-z_]+)"', sources)}
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert len(rules) >= 2
    for item in rules:
        used = {n.removesuffix("_total") for n in re.findall(r"oomdump_[a-z_]+", item["expr"])}
        assert used and used <= served, (item["alert"], used - served)
