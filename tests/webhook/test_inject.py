"""The pure core on real AdmissionReviews and on the pod shapes golden files don't cover."""

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.webhook.helpers import apply_answer, shared_reviews, validate_pod
from webhook.admit import NOT_A_POD, NOT_CREATE, admit
from webhook.config import InjectConfig, SidecarDefaults
from webhook.inject import CONTAINER_NAME, TOKEN_MOUNT_PATH, MalformedPod, inject
from webhook.review import decode

CONFIG = InjectConfig(image="ghcr.io/oomdump/oomdump:test")


def test_every_shared_admission_review_is_injected(shared_admission_reviews: Path) -> None:
    files = shared_reviews(shared_admission_reviews)
    assert len(files) >= 6
    for path in files:
        raw = path.read_bytes()
        request = decode(raw)
        original = copy.deepcopy(request.object)
        decision = admit(request, CONFIG)
        assert request.object == original, f"{path.name}: the input pod was modified"
        assert decision.result == "injected", f"{path.name}: {decision.message}"
        answer, mutated = apply_answer(decision.body, json.loads(raw)["request"]["object"])
        assert answer["apiVersion"] == json.loads(raw)["apiVersion"], path.name
        assert answer["response"]["uid"] == request.uid
        spec = mutated["spec"]
        assert spec["shareProcessNamespace"] is True
        names = [c["name"] for c in spec["containers"]]
        assert names == [c["name"] for c in original["spec"]["containers"]] + [CONTAINER_NAME]
        assert spec.get("initContainers") == original["spec"].get("initContainers"), path.name
        # Existing annotations survive (keys with '/' need JSON-pointer escaping).
        for key, value in (original["metadata"].get("annotations") or {}).items():
            assert mutated["metadata"]["annotations"][key] == value
        assert "oomdump.io/status" in mutated["metadata"]["annotations"]
        validate_pod(mutated)
        # A second pass over the mutated pod (reinvocation) changes nothing.
        again = inject(mutated, CONFIG, request.namespace)
        assert again.result == "skipped"
        assert again.reason == "already-injected"
        assert again.pod is mutated


def test_native_mode_on_shared_reviews(shared_admission_reviews: Path) -> None:
    native = InjectConfig(image="img:1", mode="native")
    for path in shared_reviews(shared_admission_reviews):
        request = decode(path.read_bytes())
        decision = admit(request, native)
        _, mutated = apply_answer(decision.body, json.loads(path.read_bytes())["request"]["object"])
        first = mutated["spec"]["initContainers"][0]
        assert first["name"] == CONTAINER_NAME
        assert first["restartPolicy"] == "Always"
        assert CONTAINER_NAME not in [c["name"] for c in mutated["spec"]["containers"]]
        validate_pod(mutated)


def pod_review(operation: str = "CREATE", kind: str = "Pod", group: str = "") -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u",
                "kind": {"group": group, "version": "v1", "kind": kind},
                "operation": operation,
                "namespace": "shop",
                "object": {"metadata": {}, "spec": {"containers": [{"name": "a", "image": "b"}]}},
            },
        }
    ).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (pod_review(operation="UPDATE"), NOT_CREATE),
        (pod_review(operation="DELETE"), NOT_CREATE),
        (pod_review(kind="Deployment", group="apps"), NOT_A_POD),
        (pod_review(kind="ConfigMap"), NOT_A_POD),
    ],
)
def test_non_pod_kinds_and_operations_are_skipped_with_a_reason(body: bytes, reason: str) -> None:
    decision = admit(decode(body), CONFIG)
    answer = json.loads(decision.body)["response"]
    assert (decision.result, decision.reason) == ("skipped", reason)
    assert answer["allowed"] is True
    assert "patch" not in answer
    assert reason in answer["warnings"][0]


@pytest.mark.parametrize(
    ("pod", "message"),
    [
        (None, "JSON object"),
        ([], "JSON object"),
        ({"metadata": {}}, "spec"),
        ({"metadata": [], "spec": {}}, "metadata"),
        ({"metadata": {"annotations": {"a": 1}}, "spec": {}}, "annotations"),
        ({"metadata": {"labels": []}, "spec": {}}, "labels"),
        ({"spec": {"containers": {}}}, "containers"),
        ({"spec": {"containers": ["x"]}}, "containers"),
        ({"spec": {"volumes": "none"}}, "volumes"),
        ({"metadata": {"namespace": ["a"]}, "spec": {}}, "namespace"),
    ],
)
def test_malformed_pods_are_refused_with_the_field_named(pod: Any, message: str) -> None:
    with pytest.raises(MalformedPod, match=message):
        inject(pod, CONFIG, "shop")


def test_reinjection_of_native_mode_output_is_a_no_op() -> None:
    native = InjectConfig(image="img:1", mode="native")
    pod = {"metadata": {"name": "a"}, "spec": {"containers": [{"name": "a", "image": "b"}]}}
    first = inject(pod, native, "shop")
    mutated = copy.deepcopy(first.pod)
    # Even without the status annotation (stripped by a tool), the container gives it away.
    del mutated["metadata"]["annotations"]["oomdump.io/status"]
    second = inject(mutated, native, "shop")
    assert (second.result, second.reason) == ("skipped", "container-name-taken")


def test_namespace_from_metadata_when_the_request_has_none() -> None:
    pod = {"metadata": {"namespace": "kube-system"}, "spec": {"containers": []}}
    assert inject(pod, CONFIG, None).reason == "excluded-namespace"
    assert inject(pod, CONFIG, "shop").result == "injected"  # request.namespace wins


def test_custom_own_namespace_is_excluded() -> None:
    config = InjectConfig(image="i", own_namespace="platform-oomdump")
    pod = {"spec": {"containers": []}}
    assert inject(pod, config, "platform-oomdump").reason == "excluded-namespace"
    assert inject(pod, config, "oomdump-system").result == "injected"


def test_warnings_stay_below_120_characters() -> None:
    pod = {
        "metadata": {"annotations": {"oomdump.io/bucket": "Not_A_Valid_Bucket" * 5}},
        "spec": {"containers": []},
    }
    outcome = inject(pod, CONFIG, "a-namespace-with-a-rather-long-name-indeed-" + "x" * 20)
    assert outcome.result == "denied"
    assert all(len(text) < 120 for text in outcome.warnings)
    assert "oomdump.io/bucket" in outcome.message


def test_the_watcher_runs_as_root_even_in_non_root_pods() -> None:
    pod = {
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
            "containers": [{"name": "app", "image": "app"}],
        }
    }
    sidecar = inject(pod, CONFIG, "shop").pod["spec"]["containers"][-1]
    assert sidecar["securityContext"]["runAsUser"] == 0
    assert sidecar["securityContext"]["runAsNonRoot"] is False
    assert pod["spec"]["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001}


def sidecar_with(profile: str, pod: dict[str, Any] | None = None) -> tuple[dict, dict]:
    config = InjectConfig(image="img", defaults=SidecarDefaults(profile=profile))  # type: ignore[arg-type]
    pod = pod or {"spec": {"containers": [{"name": "app", "image": "app"}]}}
    mutated = inject(pod, config, "shop").pod
    return mutated, mutated["spec"]["containers"][-1]


def test_privileged_profile_is_privileged_with_a_read_only_root() -> None:
    _, sidecar = sidecar_with("privileged")
    assert sidecar["securityContext"] == {
        "runAsUser": 0,
        "runAsNonRoot": False,
        "privileged": True,
        "readOnlyRootFilesystem": True,
    }


def test_least_privilege_profile_adds_only_sys_ptrace() -> None:
    _, sidecar = sidecar_with("least-privilege")
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["DETECT_MODE"] == "adaptive"  # the cgroupfs is read-only: no events
    assert "DETECT_MODE" not in {e["name"] for e in sidecar_with("privileged")[1]["env"]}
    assert sidecar["securityContext"] == {
        "runAsUser": 0,
        "runAsNonRoot": False,
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": ["SYS_PTRACE"]},
        "seccompProfile": {"type": "RuntimeDefault"},
        "readOnlyRootFilesystem": True,
    }


@pytest.mark.parametrize("profile", ["privileged", "least-privilege"])
def test_the_watcher_gets_no_api_token_and_writes_only_its_dump_volume(profile: str) -> None:
    token_volume = {"name": "kube-api-access-abcde", "projected": {"sources": []}}
    pod = {
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "app",
                    "volumeMounts": [
                        {"name": "kube-api-access-abcde", "mountPath": TOKEN_MOUNT_PATH}
                    ],
                }
            ],
            "volumes": [token_volume],
        }
    }
    mutated, sidecar = sidecar_with(profile, pod)
    volumes = {v["name"]: v for v in mutated["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    # What the ServiceAccount admission plugin checks before adding its mount: a mount at
    # the token path means "leave this container alone".
    shadow = mounts[TOKEN_MOUNT_PATH]
    assert shadow["readOnly"] is True
    assert "emptyDir" in volumes[shadow["name"]]
    assert volumes[shadow["name"]] is not token_volume
    assert all("projected" not in volumes[m["name"]] for m in sidecar["volumeMounts"])
    # Writable: the emptyDir volumes only (the root filesystem is read-only).
    writable = [m for m in sidecar["volumeMounts"] if not m.get("readOnly")]
    assert [m["mountPath"] for m in writable] == ["/tmp/oomdump"]
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    validate_pod(mutated)


@pytest.mark.parametrize("name", [{"a": 1}, ["x"], 7, None, True])
def test_a_volume_name_that_is_not_a_string_does_not_crash_the_core(name: Any) -> None:
    pod = {"spec": {"containers": [{"name": "app"}], "volumes": [{"name": name}]}}
    outcome = inject(pod, CONFIG, "shop")
    assert outcome.result == "injected"
    names = [v["name"] for v in outcome.pod["spec"]["volumes"]]
    assert names == [name, "oomdump-dumps", "oomdump-no-token"]
