"""The base install: hardening, least-privilege RBAC, availability, and that every command
line in the manifests is one our CLIs accept."""

import yaml

from certs.__main__ import build_parser as certs_parser
from tests.deploy.conftest import container, one
from tests.deploy.selectors import matches
from webhook.config import parse_defaults

NAMESPACE = "oomdump-system"
IMAGE = "ghcr.io/oomdump/oomdump:0.1.0"


def pod_spec(objects) -> dict:
    return one(objects, "Deployment", "oomdump-webhook")["spec"]["template"]["spec"]


def all_containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def test_everything_namespaced_lives_in_oomdump_system(base) -> None:
    cluster_scoped = {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
    }
    for obj in base:
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["kind"]


def test_two_replicas_spread_and_protected_by_a_budget(base) -> None:
    deployment = one(base, "Deployment", "oomdump-webhook")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (term,) = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert matches(term["podAffinityTerm"]["labelSelector"], pod_labels)
    budget = one(base, "PodDisruptionBudget", "oomdump-webhook")
    assert budget["spec"]["minAvailable"] == 1
    assert matches(budget["spec"]["selector"], pod_labels)
    assert matches(deployment["spec"]["selector"], pod_labels)


def test_service_maps_443_to_the_webhook_https_port(base) -> None:
    service = one(base, "Service", "oomdump-webhook")
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (443, "https")
    spec = pod_spec(base)
    webhook = container(spec, "webhook")
    assert {"name": "https", "containerPort": 8443, "protocol": "TCP"} in webhook["ports"]
    labels = one(base, "Deployment", "oomdump-webhook")["spec"]["template"]["metadata"]["labels"]
    assert matches({"matchLabels": service["spec"]["selector"]}, labels)


def test_probes_are_https_on_healthz_and_readyz(base) -> None:
    webhook = container(pod_spec(base), "webhook")
    assert webhook["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "https",
        "scheme": "HTTPS",
    }
    assert webhook["livenessProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": "https",
        "scheme": "HTTPS",
    }


def test_every_container_is_restricted(base) -> None:
    spec = pod_spec(base)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for item in all_containers(spec):
        security = item["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, item["name"]
        assert security["readOnlyRootFilesystem"] is True, item["name"]
        assert security["capabilities"] == {"drop": ["ALL"]}, item["name"]
        assert set(item["resources"]["limits"]) == {"cpu", "memory"}, item["name"]
        assert set(item["resources"]["requests"]) == {"cpu", "memory"}, item["name"]
        assert item["image"] == IMAGE, item["name"]


def test_certificates_flow_from_bootstrap_to_the_webhook(base) -> None:
    spec = pod_spec(base)
    init = container(spec, "certs-bootstrap", init=True)
    loop = container(spec, "cert-reconciler")
    webhook = container(spec, "webhook")
    mounts = {c["name"]: {m["name"]: m for m in c["volumeMounts"]} for c in (init, loop, webhook)}
    assert mounts["certs-bootstrap"]["certs"]["mountPath"] == "/certs"
    assert mounts["cert-reconciler"]["certs"]["mountPath"] == "/certs"
    assert mounts["webhook"]["certs"] == {"name": "certs", "mountPath": "/certs", "readOnly": True}
    env = {e["name"]: e.get("value") for e in webhook["env"]}
    assert (env["TLS_CERT_FILE"], env["TLS_KEY_FILE"]) == ("/certs/tls.crt", "/certs/tls.key")
    assert "--out=/certs" in init["args"] and "--out=/certs" in loop["args"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["certs"]


def test_bootstrap_command_lines_parse_with_the_real_cli(base) -> None:
    spec = pod_spec(base)
    init = container(spec, "certs-bootstrap", init=True)
    loop = container(spec, "cert-reconciler")
    for item in (init, loop):
        assert item["command"] == ["python", "-m", "certs", "bootstrap"]
    once = certs_parser().parse_args(["bootstrap", *init["args"]])
    looping = certs_parser().parse_args(["bootstrap", *loop["args"]])
    assert (once.loop, looping.loop) == (False, True)
    assert once.secret_name == looping.secret_name == "oomdump-webhook-tls"
    assert looping.interval == 30.0
    for item in (init, loop):
        (namespace,) = [e for e in item["env"] if e["name"] == "POD_NAMESPACE"]
        assert namespace["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_webhook_environment_follows_the_agreement(base) -> None:
    webhook = container(pod_spec(base), "webhook")
    assert webhook["command"] == ["python", "-m", "webhook"]
    env = {e["name"]: e for e in webhook["env"]}
    assert env["WEBHOOK_PORT"]["value"] == "8443"
    assert env["SIDECAR_IMAGE"]["value"] == webhook["image"] == IMAGE
    assert env["SIDECAR_MODE"]["value"] in {"container", "native"}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    defaults_path = env["SIDECAR_DEFAULTS_FILE"]["value"]
    (mount,) = [m for m in webhook["volumeMounts"] if defaults_path.startswith(m["mountPath"])]
    (volume,) = [v for v in pod_spec(base)["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "oomdump-sidecar-defaults"
    assert defaults_path == f"{mount['mountPath']}/defaults.yaml"


def test_sidecar_defaults_follow_the_agreed_format(base) -> None:
    config_map = one(base, "ConfigMap", "oomdump-sidecar-defaults")
    defaults = yaml.safe_load(config_map["data"]["defaults.yaml"])
    assert set(defaults) <= {"env", "envFrom", "resources", "privilegeProfile", "privileged"}
    assert set(defaults["env"]) <= {
        "CRITICAL",
        "COOLDOWN",
        "WATCH_TIME",
        "BUCKET",
        "S3_PREFIX",
        "S3_ENDPOINT_URL",
        "AWS_REGION",
        "DUMP_DIR",
        "PPROF_PATH",
        "PPROF_PORTS",
        "MEMORY_METRIC",
    }
    assert all(isinstance(value, str) for value in defaults["env"].values())
    assert defaults["env"]["CRITICAL"] == "70"
    assert defaults["envFrom"] == [{"secretRef": {"name": "oomdump-s3", "optional": True}}]
    assert defaults["privilegeProfile"] == "privileged"  # the design's default
    assert set(defaults["resources"]) == {"requests", "limits"}
    # The webhook's own parser accepts the shipped file as it is.
    parsed = parse_defaults(config_map["data"]["defaults.yaml"], "defaults.yaml")
    assert parsed.profile == "privileged"


def test_rbac_is_only_the_named_secret_and_webhook_configuration(base) -> None:
    cluster_role = one(base, "ClusterRole", "oomdump-webhook-cabundle")
    assert cluster_role["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": ["oomdump"],
            "verbs": ["get", "patch"],
        }
    ]
    role = one(base, "Role", "oomdump-webhook-tls")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["oomdump-webhook-tls"],
            "verbs": ["get", "update"],
        },
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    ]
    for kind, name in (
        ("ClusterRoleBinding", "oomdump-webhook-cabundle"),
        ("RoleBinding", "oomdump-webhook-tls"),
    ):
        binding = one(base, kind, name)
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "oomdump-webhook", "namespace": NAMESPACE}
        ]
        assert binding["roleRef"]["name"] == name
    assert pod_spec(base)["serviceAccountName"] == "oomdump-webhook"
    one(base, "ServiceAccount", "oomdump-webhook")
    roles = [o for o in base if o["kind"] in {"Role", "ClusterRole"}]
    assert len(roles) == 3  # nothing else grants anything


NOTICE_RULES = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
]


def test_notices_may_review_tokens_read_pods_and_write_events_only(base) -> None:
    assert one(base, "ClusterRole", "oomdump-webhook-notices")["rules"] == NOTICE_RULES
    binding = one(base, "ClusterRoleBinding", "oomdump-webhook-notices")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "oomdump-webhook-notices",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "oomdump-webhook", "namespace": NAMESPACE}
    ]


def test_watchers_are_pointed_at_the_service_and_the_ca_beside_the_pair(base) -> None:
    from webhook.__main__ import parse_args
    from webhook.config import notify_url

    webhook = container(pod_spec(base), "webhook")
    env = {e["name"]: e.get("value") for e in webhook["env"] if "value" in e}
    args = parse_args(
        [f"--{name.lower().replace('_', '-')}={value}" for name, value in (
            ("TLS_CERT_FILE", env["TLS_CERT_FILE"]),
            ("TLS_KEY_FILE", env["TLS_KEY_FILE"]),
            ("SIDECAR_IMAGE", env["SIDECAR_IMAGE"]),
            ("SERVICE_NAME", env["WEBHOOK_SERVICE_NAME"]),
        )]
    )  # fmt: skip
    service = one(base, "Service", "oomdump-webhook")
    (port,) = service["spec"]["ports"]
    assert notify_url(args.service_name, NAMESPACE, args.service_port) == notify_url(
        service["metadata"]["name"], service["metadata"]["namespace"], port["port"]
    )
    assert args.notify_ca_file is None  # so: ca.crt next to tls.crt, which bootstrap writes
    assert "--out=/certs" in container(pod_spec(base), "certs-bootstrap", init=True)["args"]


def test_the_webhook_holds_its_own_credentials_for_notices(base) -> None:
    spec = pod_spec(base)
    volumes = {v["name"]: v for v in spec["volumes"]}
    sources = volumes["notice-credentials"]["projected"]["sources"]
    (token,) = [
        source["serviceAccountToken"] for source in sources if "serviceAccountToken" in source
    ]
    assert "audience" not in token  # the API server's own audience
    holders = {
        item["name"]: mount["mountPath"]
        for item in all_containers(spec)
        for mount in item["volumeMounts"]
        if mount["name"] == "notice-credentials" and mount["readOnly"]
    }
    assert holders == {"webhook": "/var/run/secrets/kubernetes.io/serviceaccount"}


def test_only_the_certificate_containers_hold_api_credentials(base) -> None:
    spec = pod_spec(base)
    assert spec["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    sources = volumes["api-credentials"]["projected"]["sources"]
    assert {key for source in sources for key in source} == {
        "serviceAccountToken",
        "configMap",
        "downwardAPI",
    }
    in_cluster_path = "/var/run/secrets/kubernetes.io/serviceaccount"  # where the client looks
    holders = {
        item["name"]
        for item in all_containers(spec)
        for mount in item["volumeMounts"]
        if mount["name"] == "api-credentials"
        and mount["mountPath"] == in_cluster_path
        and mount["readOnly"]
    }
    assert holders == {"certs-bootstrap", "cert-reconciler"}
