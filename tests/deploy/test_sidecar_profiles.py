"""Both privilege profiles of the shipped defaults ConfigMap, injected into the shipped
example pod: valid Pods for the Kubernetes versions the manifests target."""

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import one
from tests.deploy.pod_security import violations
from tests.deploy.test_schema import KUBERNETES_VERSIONS
from webhook.config import InjectConfig, parse_defaults
from webhook.inject import CONTAINER_NAME, inject

PROFILES = ["privileged", "least-privilege"]


def injected_demo(base, examples, profile: str) -> dict:
    config_map = one(base, "ConfigMap", "oomdump-sidecar-defaults")
    document = yaml.safe_load(config_map["data"]["defaults.yaml"])
    document["privilegeProfile"] = profile
    defaults = parse_defaults(yaml.safe_dump(document), "defaults.yaml")
    template = one(examples, "Deployment", "go-memory-leak")["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", **template}
    outcome = inject(pod, InjectConfig(image="ghcr.io/oomdump/oomdump:0.1.0", defaults=defaults))
    assert outcome.result == "injected", outcome.message
    return outcome.pod


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_injects_a_valid_pod(base, examples, profile: str, version: str) -> None:
    pod = injected_demo(base, examples, profile)
    kubernetes_validate.validate(pod, version, strict=True)


def test_least_privilege_drops_privileged_mode_and_all_but_sys_ptrace(base, examples) -> None:
    pod = injected_demo(base, examples, "least-privilege")
    (sidecar,) = [c for c in pod["spec"]["containers"] if c["name"] == CONTAINER_NAME]
    security = sidecar["securityContext"]
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["SYS_PTRACE"]}


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_has_a_read_only_root(base, examples, profile: str) -> None:
    pod = injected_demo(base, examples, profile)
    (sidecar,) = [c for c in pod["spec"]["containers"] if c["name"] == CONTAINER_NAME]
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    writable = [m for m in sidecar["volumeMounts"] if not m.get("readOnly")]
    assert [(m["mountPath"], "emptyDir" in volumes[m["name"]]) for m in writable] == [
        ("/tmp/oomdump", True)
    ]


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_needs_the_privileged_pod_security_level(base, examples, profile: str) -> None:
    """What README's Security section tells operators: SYS_PTRACE (least-privilege) is
    outside `baseline` as privileged mode is, so an opted-in namespace must enforce
    `privileged` in both profiles, and deploy/examples does."""
    template = one(examples, "Deployment", "go-memory-leak")["spec"]["template"]
    plain = violations({"apiVersion": "v1", "kind": "Pod", **template})
    assert plain["baseline"] == []  # the app alone is fine: the watcher is what needs more
    found = violations(injected_demo(base, examples, profile))
    expected = "privileged" if profile == "privileged" else "non-default capabilities"
    assert any(expected in reason for reason in found["baseline"]), found
    namespace = one(examples, "Namespace", "oomdump-demo")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
