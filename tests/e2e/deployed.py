"""`deploy/` installed in a real API server, and the certificate containers run from it as
their ServiceAccount, with a token the API server issued (TokenRequest).

The commands are taken from the rendered Deployment (init container `certs-bootstrap`,
container `cert-reconciler`), so a test runs what the pods run; only the paths that exist
inside a pod (the emptyDir, the projected token) are replaced by local ones.
"""

import copy
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from testinfra.cluster import Cluster
from testinfra.node_deploy import apply as apply  # one copy, shared with tests/node
from testinfra.webhook_server import WEBHOOK_NAMESPACE

RBAC_KINDS = ("ClusterRole", "Role")
# The token the Deployment's projected volume asks for lives this long; so does ours.
TOKEN_SECONDS = 3607
RBAC_PROPAGATION_TIMEOUT = 15.0
INIT_CONTAINER = "certs-bootstrap"
RECONCILER_CONTAINER = "cert-reconciler"

Objects = list[dict[str, Any]]


def one(objects: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    if len(found) != 1:
        raise ValueError(f"deploy/ renders {len(found)} {kind} {name or ''}, not 1")
    return found[0]


@dataclass(frozen=True)
class Identity:
    """The webhook's ServiceAccount as RBAC sees it."""

    namespace: str
    name: str

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    @property
    def groups(self) -> list[str]:
        return [
            "system:serviceaccounts",
            f"system:serviceaccounts:{self.namespace}",
            "system:authenticated",
        ]


def service_account_of(objects: Objects) -> Identity:
    """The ServiceAccount the rendered Deployment runs as."""
    deployment = one(objects, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    return Identity(deployment["metadata"]["namespace"], spec["serviceAccountName"])


def write_token_kubeconfig(cluster: Cluster, identity: Identity, path: Path) -> Path:
    """A kubeconfig holding a token the API server issues for `identity` (TokenRequest)."""
    core = client.CoreV1Api(cluster.api_client())
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=TOKEN_SECONDS)
    )
    token = core.create_namespaced_service_account_token(
        identity.name, identity.namespace, request
    ).status.token
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": cluster.server_url,
                    "certificate-authority": str(cluster.ca_path),
                },
            }
        ],
        "users": [{"name": identity.name, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": identity.name}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def authenticated_as(kubeconfig: Path) -> str:
    """The user name the API server authenticates `kubeconfig`'s credentials as."""
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    review = client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview()
    )
    return review.status.user_info.username


def container_command(
    objects: Objects, container: str, out: Path, kubeconfig: Path, *extra: str
) -> list[str]:
    """`container`'s command and args from the rendered Deployment, run by this Python,
    serving files into `out`, authenticated through `kubeconfig`."""
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    containers = spec.get("initContainers", []) + spec["containers"]
    found = [c for c in containers if c["name"] == container]
    if len(found) != 1:
        raise ValueError(f"the Deployment has {len(found)} containers named {container}")
    command = [*found[0]["command"], *found[0].get("args", [])]
    if command[0] != "python" or not any(arg.startswith("--out=") for arg in command):
        raise ValueError(f"{container} is not `python -m certs bootstrap --out=...`: {command}")
    command[0] = sys.executable
    command = [f"--out={out}" if arg.startswith("--out=") else arg for arg in command]
    return [*command, f"--kubeconfig={kubeconfig}", *extra]


def _allowed(api: client.ApiClient, identity: Identity, attributes: dict[str, str]) -> bool:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=identity.username,
            groups=identity.groups,
            resource_attributes=client.V1ResourceAttributes(**attributes),
        )
    )
    return bool(client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed)


def wait_for_authorization(
    api: client.ApiClient, identity: Identity, attributes: dict[str, str], allowed: bool
) -> None:
    """RBAC objects reach the authorizer through an informer, a moment after they are
    written: poll a SubjectAccessReview (the same authorizer) until it answers `allowed`."""
    deadline = time.monotonic() + RBAC_PROPAGATION_TIMEOUT
    while _allowed(api, identity, attributes) != allowed:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{identity.username} {attributes}: still allowed={not allowed} after "
                f"{RBAC_PROPAGATION_TIMEOUT:.0f}s"
            )
        time.sleep(0.05)


def rule_grants(role: dict[str, Any], namespace: str | None) -> list[dict[str, str]]:
    """One SubjectAccessReview resource attribute set per (rule, verb, name) of `role`."""
    grants = []
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames", [None]):
                        attributes = {"group": group, "resource": resource, "verb": verb}
                        if name is not None:
                            attributes["name"] = name
                        if namespace is not None:
                            attributes["namespace"] = namespace
                        grants.append(attributes)
    return grants


def _replace_role(api: client.ApiClient, role: dict[str, Any]) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    body = copy.deepcopy(role)
    name = body["metadata"]["name"]
    if role["kind"] == "ClusterRole":
        body["metadata"]["resourceVersion"] = rbac.read_cluster_role(name).metadata.resource_version
        rbac.replace_cluster_role(name, body)
    else:
        namespace = body["metadata"]["namespace"]
        current = rbac.read_namespaced_role(name, namespace)
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        rbac.replace_namespaced_role(name, namespace, body)


@contextmanager
def verb_removed(
    api: client.ApiClient, identity: Identity, role: dict[str, Any], resource: str, verb: str
) -> Iterator[None]:
    """`role` without `verb` on `resource`, effective in the authorizer; restored after."""
    weakened = copy.deepcopy(role)
    for rule in weakened["rules"]:
        if resource in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    weakened["rules"] = [rule for rule in weakened["rules"] if rule["verbs"]]
    namespace = role["metadata"].get("namespace")
    lost = [g for g in rule_grants(role, namespace) if g not in rule_grants(weakened, namespace)]
    if not lost:
        raise ValueError(f"{role['metadata']['name']} grants no {verb} on {resource}")
    _replace_role(api, weakened)
    try:
        for attributes in lost:
            wait_for_authorization(api, identity, attributes, allowed=False)
        yield
    finally:
        _replace_role(api, role)
        for attributes in lost:
            wait_for_authorization(api, identity, attributes, allowed=True)


def reset_certificates(api: client.ApiClient, objects: Objects, secret: str) -> None:
    """Back to a fresh install: no Secret, and the MutatingWebhookConfiguration as rendered
    (no caBundle)."""
    core = client.CoreV1Api(api)
    try:
        core.delete_namespaced_secret(secret, WEBHOOK_NAMESPACE)
    except ApiException as error:
        if error.status != 404:
            raise
    configuration = one(objects, "MutatingWebhookConfiguration")
    admission = client.AdmissionregistrationV1Api(api)
    current = admission.read_mutating_webhook_configuration(configuration["metadata"]["name"])
    body = copy.deepcopy(configuration)
    body["metadata"]["resourceVersion"] = current.metadata.resource_version
    admission.replace_mutating_webhook_configuration(configuration["metadata"]["name"], body)
