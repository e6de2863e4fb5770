"""The certificate containers with the rights `deploy/` gives them, against a real API server.

`deploy/` is installed into an API server of this module's own (its RBAC names the
MutatingWebhookConfiguration `oomdump`, which the shared cluster's webhook holds), and
`python -m certs bootstrap` runs exactly as the Deployment's containers declare it, with a
token the API server issued for the ServiceAccount (TokenRequest): RBAC, not a superuser,
decides each request. Shown here: a first install, that each granted verb is needed (403
without it), a CA rotation by the reconcile loop, and two replicas racing to create.
"""

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client

from testinfra.cluster import Cluster
from testinfra.kustomize import render
from testinfra.process import start_process, stop_process, wait_until
from testinfra.webhook_server import DEPLOY_DIR, REPO_ROOT
from tests.e2e.deployed import (
    INIT_CONTAINER,
    RBAC_KINDS,
    RECONCILER_CONTAINER,
    Identity,
    Objects,
    apply,
    authenticated_as,
    container_command,
    one,
    reset_certificates,
    rule_grants,
    service_account_of,
    verb_removed,
    wait_for_authorization,
    write_token_kubeconfig,
)

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 60


@dataclass(frozen=True)
class Installed:
    cluster: Cluster
    api: client.ApiClient
    objects: Objects
    identity: Identity
    kubeconfig: Path  # the ServiceAccount's token
    secret_name: str
    config_name: str

    def command(self, container: str, out: Path, *extra: str) -> list[str]:
        return container_command(self.objects, container, out, self.kubeconfig, *extra)

    def env(self) -> dict[str, str]:
        # POD_NAMESPACE as the Deployment's fieldRef sets it; no other credentials.
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        return {**env, "POD_NAMESPACE": self.identity.namespace}

    def secret(self) -> dict[str, bytes]:
        found = client.CoreV1Api(self.api).read_namespaced_secret(
            self.secret_name, self.identity.namespace
        )
        return {key: base64.b64decode(value) for key, value in found.data.items()}

    def secret_version(self) -> str:
        core = client.CoreV1Api(self.api)
        return core.read_namespaced_secret(
            self.secret_name, self.identity.namespace
        ).metadata.resource_version

    def configuration(self) -> client.V1MutatingWebhookConfiguration:
        admission = client.AdmissionregistrationV1Api(self.api)
        return admission.read_mutating_webhook_configuration(self.config_name)

    def ca_bundles(self) -> list[bytes]:
        return [
            base64.b64decode(hook.client_config.ca_bundle or "")
            for hook in self.configuration().webhooks
        ]


def _flag(command: list[str], name: str) -> str:
    values = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"{name}=")]
    if len(values) != 1:
        raise ValueError(f"{name} appears {len(values)} times in {command}")
    return values[0]


@pytest.fixture(scope="module")
def rendered() -> Objects:
    """`deploy/` rendered for this module alone, so no other test's edit can leak in."""
    return render(DEPLOY_DIR)


@pytest.fixture(scope="module")
def installed(
    own_cluster: Cluster, rendered: Objects, tmp_path_factory: pytest.TempPathFactory
) -> Installed:
    api = own_cluster.api_client()
    apply(api, rendered)
    identity = service_account_of(rendered)
    for kind in RBAC_KINDS:
        for role in (o for o in rendered if o["kind"] == kind):
            for grant in rule_grants(role, role["metadata"].get("namespace")):
                wait_for_authorization(api, identity, grant, allowed=True)
    kubeconfig = tmp_path_factory.mktemp("service-account") / "kubeconfig"
    write_token_kubeconfig(own_cluster, identity, kubeconfig)
    init = container_command(rendered, INIT_CONTAINER, Path("/certs"), kubeconfig)
    return Installed(
        own_cluster,
        api,
        rendered,
        identity,
        kubeconfig,
        _flag(init, "--secret-name"),
        _flag(init, "--webhook-config-name"),
    )


@pytest.fixture
def fresh(installed: Installed) -> Iterator[Installed]:
    """A fresh install: no Secret yet, the webhook configuration without caBundle."""
    reset_certificates(installed.api, installed.objects, installed.secret_name)
    yield installed


def _run(deployed: Installed, command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
        env=deployed.env(),
        timeout=RUN_TIMEOUT,
    )


def _succeeds(deployed: Installed, command: list[str]) -> subprocess.CompletedProcess[str]:
    result = _run(deployed, command)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}{result.stderr}"
    return result


def _certificates(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def _served(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in ("ca.crt", "tls.crt", "tls.key")}


def test_bootstrap_as_the_service_account_creates_the_secret_and_sets_the_ca_bundle(
    fresh: Installed, tmp_path: Path
) -> None:
    assert authenticated_as(fresh.kubeconfig) == fresh.identity.username
    out = tmp_path / "certs"

    _succeeds(fresh, fresh.command(INIT_CONTAINER, out))

    stored = fresh.secret()
    ca = _certificates(stored["ca.crt"])
    assert len(ca) == 1
    leaf = x509.load_pem_x509_certificate(stored["tls.crt"])
    leaf.verify_directly_issued_by(ca[0])
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    service = one(fresh.objects, "Service")["metadata"]
    assert f"{service['name']}.{service['namespace']}.svc" in names.get_values_for_type(
        x509.DNSName
    )
    bundles = fresh.ca_bundles()
    assert bundles and set(bundles) == {stored["ca.crt"]}
    assert _served(out) == {name: stored[name] for name in ("ca.crt", "tls.crt", "tls.key")}

    # A second replica's init container loads what is there and changes nothing.
    versions = (fresh.secret_version(), fresh.configuration().metadata.resource_version)
    again = _succeeds(fresh, fresh.command(INIT_CONTAINER, tmp_path / "second"))
    assert again.stdout.startswith("wrote the served files"), again.stdout
    assert (fresh.secret_version(), fresh.configuration().metadata.resource_version) == versions
    assert _served(tmp_path / "second") == _served(out)


@dataclass(frozen=True)
class Needed:
    kind: str
    resource: str
    verb: str
    step: str  # what the refused request was, as bootstrap names it
    broken_secret: bool = False  # a Secret that must be replaced (so `update` is reached)


NEEDED = [
    Needed("Role", "secrets", "get", "reading Secret"),
    Needed("Role", "secrets", "create", "creating Secret"),
    Needed("Role", "secrets", "update", "updating Secret", broken_secret=True),
    Needed("ClusterRole", "mutatingwebhookconfigurations", "get", "reading Mutating"),
    Needed("ClusterRole", "mutatingwebhookconfigurations", "patch", "patching caBundle"),
]


def test_every_granted_verb_has_a_case_that_needs_it(rendered: Objects) -> None:
    granted = {
        (role["kind"], grant["resource"], grant["verb"])
        for kind in RBAC_KINDS
        for role in (o for o in rendered if o["kind"] == kind)
        if role["metadata"]["name"] != "oomdump-webhook-notices"  # tests/e2e/test_events.py
        for grant in rule_grants(role, None)
    }
    assert granted == {(n.kind, n.resource, n.verb) for n in NEEDED}


def _role_granting(objects: Objects, kind: str, resource: str) -> dict[str, Any]:
    roles = [
        o
        for o in objects
        if o["kind"] == kind and any(resource in r["resources"] for r in o["rules"])
    ]
    assert len(roles) == 1, f"{len(roles)} {kind}s grant {resource}"
    return roles[0]


@pytest.mark.parametrize("needed", NEEDED, ids=lambda n: f"{n.resource}-{n.verb}")
def test_bootstrap_is_refused_without_each_granted_verb(
    fresh: Installed, tmp_path: Path, needed: Needed
) -> None:
    if needed.broken_secret:
        client.CoreV1Api(fresh.api).create_namespaced_secret(
            fresh.identity.namespace,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name=fresh.secret_name),
                type="kubernetes.io/tls",
                string_data={"tls.crt": "not a certificate", "tls.key": "not a key"},
            ),
        )
    command = fresh.command(INIT_CONTAINER, tmp_path / "certs")
    role = _role_granting(fresh.objects, needed.kind, needed.resource)

    with verb_removed(fresh.api, fresh.identity, role, needed.resource, needed.verb):
        refused = _run(fresh, command)

    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"oomdump-certs bootstrap: {needed.step}" in refused.stderr
    assert "HTTP 403 Forbidden (the service account lacks this permission" in refused.stderr
    # The API server's own refusal, naming the ServiceAccount: RBAC judged the request.
    assert f"{fresh.identity.username}" in refused.stderr
    assert f"cannot {needed.verb} resource" in refused.stderr
    assert not (tmp_path / "certs" / "tls.key").exists()
    # The same command with the rule back: the verb was all that was missing.
    _succeeds(fresh, command)
    assert _served(tmp_path / "certs")["ca.crt"] == fresh.secret()["ca.crt"]


def test_reconciler_as_the_service_account_rotates_the_ca(fresh: Installed, tmp_path: Path) -> None:
    # Both lifetimes short, so a third of the CA's is left a few seconds after issue.
    short = ("--validity=9s", "--ca-validity=9s")
    out = tmp_path / "certs"
    _succeeds(fresh, fresh.command(INIT_CONTAINER, out, *short))
    first = fresh.secret()
    old_ca = _certificates(first["ca.crt"])[0]

    log = tmp_path / "reconciler.log"
    loop = start_process(
        fresh.command(RECONCILER_CONTAINER, out, *short, "--interval=300ms"),
        log,
        env=fresh.env(),
        cwd=REPO_ROOT,
    )
    try:

        def rotated_everywhere() -> bool:
            stored = fresh.secret()
            return (
                _certificates(stored["ca.crt"])[0] != old_ca
                and set(fresh.ca_bundles()) == {stored["ca.crt"]}
                and _served(out)["tls.crt"] == stored["tls.crt"]
            )

        until_expiry = (old_ca.not_valid_after_utc - datetime.now(UTC)).total_seconds()
        wait_until(
            rotated_everywhere,
            what="the reconciler rotating the CA",
            timeout=max(until_expiry, 0) + 10,
            process=loop,
            log_path=log,
        )
        loop.terminate()
        assert loop.wait(timeout=15) == 0, log.read_text()
    finally:
        stop_process(loop)

    rotated = fresh.secret()
    bundle = _certificates(rotated["ca.crt"])
    # The new CA first; the old one stays trusted while pairs it signed may still be served.
    assert len(bundle) == 2 and bundle[1] == old_ca
    x509.load_pem_x509_certificate(rotated["tls.crt"]).verify_directly_issued_by(bundle[0])
    assert _served(out) == {name: rotated[name] for name in ("ca.crt", "tls.crt", "tls.key")}
    text = log.read_text()
    assert "stored a new CA and serving pair (the CA expires" in text
    assert "HTTP 403" not in text


def _arrived(barrier: Path, replicas: list[subprocess.Popen[bytes]], logs: list[Path]) -> bool:
    for replica, log in zip(replicas, logs, strict=True):
        if replica.poll() is not None:
            raise AssertionError(f"a replica exited before the barrier:\n{log.read_text()}")
    return len(list(barrier.glob("arrived-*"))) == len(replicas)


def test_two_replicas_racing_to_create_converge_on_one_ca(fresh: Installed, tmp_path: Path) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    outs = [tmp_path / f"replica-{i}" for i in range(2)]
    logs = [tmp_path / f"replica-{i}.log" for i in range(2)]
    replicas = []
    try:
        for out, log in zip(outs, logs, strict=True):
            bootstrap = fresh.command(INIT_CONTAINER, out)[3:]  # after `python -m certs`
            wrapped = [sys.executable, "-m", "tests.e2e.paused_bootstrap", str(barrier), "--"]
            replicas.append(
                start_process([*wrapped, *bootstrap], log, env=fresh.env(), cwd=REPO_ROOT)
            )
        # Both have read the Secret, found none, and hold a create of their own.
        wait_until(
            lambda: _arrived(barrier, replicas, logs), what="both replicas", timeout=RUN_TIMEOUT
        )
        (barrier / "go").touch()
        codes = [replica.wait(timeout=RUN_TIMEOUT) for replica in replicas]
    finally:
        for replica in replicas:
            stop_process(replica)

    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n".join(texts)
    conflict = (
        f"conflict, reading again: creating Secret {fresh.identity.namespace}/"
        f"{fresh.secret_name}: HTTP 409"
    )
    losers = [text for text in texts if conflict in text]
    winners = [text for text in texts if "created the secret" in text]
    assert len(losers) == 1 and len(winners) == 1 and losers != winners, "\n".join(texts)
    stored = fresh.secret()
    assert len(_certificates(stored["ca.crt"])) == 1
    assert set(fresh.ca_bundles()) == {stored["ca.crt"]}
    for out in outs:
        assert _served(out) == {name: stored[name] for name in ("ca.crt", "tls.crt", "tls.key")}
