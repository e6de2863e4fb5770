"""The cert-manager overlay. Issuer and Certificate are CRDs that kubernetes-validate has
no schema for, so their apiVersion, kind and fields are checked here by hand against
cert-manager's v1 API (https://cert-manager.io/docs/reference/api-docs/)."""

from certs.pki import service_dns_names
from tests.deploy.conftest import one

NAMESPACE = "oomdump-system"
ISSUER_SPEC_FIELDS = {"selfSigned", "ca", "acme", "vault", "venafi"}
CERTIFICATE_SPEC_FIELDS = {
    "secretName",
    "issuerRef",
    "dnsNames",
    "commonName",
    "duration",
    "renewBefore",
    "usages",
    "privateKey",
    "isCA",
    "secretTemplate",
    "subject",
    "ipAddresses",
    "uris",
}
USAGES = {"digital signature", "key encipherment", "server auth", "client auth", "cert sign"}


def cert_manager_objects(objects) -> list[dict]:
    return [o for o in objects if o["apiVersion"].startswith("cert-manager.io")]


def test_crs_use_the_v1_api_and_known_fields(cert_manager) -> None:
    crs = cert_manager_objects(cert_manager)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in crs) == [
        ("Certificate", "oomdump-webhook-ca"),
        ("Certificate", "oomdump-webhook-tls"),
        ("Issuer", "oomdump-ca"),
        ("Issuer", "oomdump-selfsigned"),
    ]
    for obj in crs:
        assert obj["apiVersion"] == "cert-manager.io/v1"
        assert obj["metadata"]["namespace"] == NAMESPACE
        allowed = ISSUER_SPEC_FIELDS if obj["kind"] == "Issuer" else CERTIFICATE_SPEC_FIELDS
        assert set(obj["spec"]) <= allowed, obj["metadata"]["name"]
        if obj["kind"] == "Issuer":
            assert len(set(obj["spec"]) & ISSUER_SPEC_FIELDS) == 1  # exactly one issuer type
        else:
            assert set(obj["spec"].get("usages", [])) <= USAGES
            assert obj["spec"]["privateKey"] == {
                "algorithm": "ECDSA",
                "size": 256,
                "rotationPolicy": "Always",
            }


def test_issuer_chain_resolves(cert_manager) -> None:
    issuers = {o["metadata"]["name"]: o for o in cert_manager if o["kind"] == "Issuer"}
    ca_cert = one(cert_manager, "Certificate", "oomdump-webhook-ca")
    serving = one(cert_manager, "Certificate", "oomdump-webhook-tls")
    assert ca_cert["spec"]["isCA"] is True
    assert issuers[ca_cert["spec"]["issuerRef"]["name"]]["spec"] == {"selfSigned": {}}
    ca_issuer = issuers[serving["spec"]["issuerRef"]["name"]]
    assert ca_issuer["spec"] == {"ca": {"secretName": ca_cert["spec"]["secretName"]}}
    for cert in (ca_cert, serving):
        assert cert["spec"]["issuerRef"]["kind"] == "Issuer"
        assert cert["spec"]["issuerRef"]["group"] == "cert-manager.io"


def test_serving_certificate_matches_the_service_and_the_mount(cert_manager) -> None:
    serving = one(cert_manager, "Certificate", "oomdump-webhook-tls")
    assert serving["spec"]["dnsNames"] == service_dns_names("oomdump-webhook", NAMESPACE)
    assert "server auth" in serving["spec"]["usages"]
    spec = one(cert_manager, "Deployment", "oomdump-webhook")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["certs"]["secret"]["secretName"] == serving["spec"]["secretName"]
    assert "emptyDir" not in volumes["certs"]


def test_cainjector_points_at_the_serving_certificate(cert_manager) -> None:
    configuration = one(cert_manager, "MutatingWebhookConfiguration", "oomdump")
    serving = one(cert_manager, "Certificate", "oomdump-webhook-tls")
    annotation = configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert annotation == f"{NAMESPACE}/{serving['metadata']['name']}"


def test_renewal_at_a_third_of_the_lifetime_left(cert_manager) -> None:
    for name in ("oomdump-webhook-ca", "oomdump-webhook-tls"):
        spec = one(cert_manager, "Certificate", name)["spec"]
        duration = int(spec["duration"].removesuffix("h"))
        renew_before = int(spec["renewBefore"].removesuffix("h"))
        assert renew_before * 3 == duration, name


def test_bootstrap_and_its_api_access_are_gone(cert_manager) -> None:
    spec = one(cert_manager, "Deployment", "oomdump-webhook")["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    assert [c["name"] for c in spec["containers"]] == ["webhook"]
    assert spec["automountServiceAccountToken"] is False
    # The webhook keeps its credentials for notices, and nothing else.
    volumes = {v["name"] for v in spec["volumes"]}
    assert volumes == {"certs", "sidecar-defaults", "tmp", "notice-credentials"}
    roles = [o for o in cert_manager if o["kind"] in {"Role", "ClusterRole"}]
    bindings = [o for o in cert_manager if o["kind"] in {"RoleBinding", "ClusterRoleBinding"}]
    assert [o["metadata"]["name"] for o in roles + bindings] == ["oomdump-webhook-notices"] * 2
