"""Properties over generated pods, checked on what the webhook answers: its own patch,
applied to the pod sent, gives inject()'s pod, a valid Pod for the Kubernetes OpenAPI
schema that keeps the app's containers, volumes, annotations and labels, adds one watcher
whose env the kubelet cannot expand, and a second pass over it is a no-op. No input
crashes the core."""

import base64
import copy
import json
import string
from typing import Any

import jsonpatch
import kubernetes_validate
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.webhook.helpers import K8S_VERSION
from webhook.admit import admit
from webhook.annotations import STATUS, env_overrides
from webhook.config import InjectConfig, SidecarDefaults
from webhook.inject import CONTAINER_NAME, MalformedPod, inject
from webhook.review import BadReview, decode

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

dns_label = st.from_regex(r"[a-z]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
annotation_key = st.one_of(
    st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,5})?/[A-Za-z0-9][-A-Za-z0-9_.~]{0,12}", fullmatch=True),
    st.from_regex(r"[a-zA-Z][-A-Za-z0-9_.~/]{0,15}", fullmatch=True),
)
oomdump_annotation = st.sampled_from(
    [
        ("oomdump.io/critical", "85"),
        ("oomdump.io/critical", "0"),
        ("oomdump.io/cooldown", "5m"),
        ("oomdump.io/cooldown", "48h"),
        ("oomdump.io/watch-time", "50ms"),
        ("oomdump.io/ports", "6060,8080"),
        ("oomdump.io/ports", "70000"),
        ("oomdump.io/bucket", "heap-dumps"),
        ("oomdump.io/bucket", "Heap_Dumps"),
        ("oomdump.io/prefix", "team/a/"),
        ("oomdump.io/prefix", ""),
        ("oomdump.io/prefix", "../other/"),
        ("oomdump.io/prefix", "$(AWS_SECRET_ACCESS_KEY)/"),
        ("oomdump.io/inject", "enabled"),
        ("oomdump.io/inject", "disabled"),
    ]
)
text_value = st.text(alphabet=string.printable, max_size=20)


@st.composite
def containers(draw: st.DrawFn, count: int, native: bool = False) -> list[dict[str, Any]]:
    names = draw(st.lists(dns_label, min_size=count, max_size=count, unique=True))
    if CONTAINER_NAME not in names and draw(st.integers(0, 9)) == 9:
        names[0] = CONTAINER_NAME  # a container already named like ours
    built = []
    for name in names:
        container: dict[str, Any] = {"name": name, "image": f"registry.example/{name}:1"}
        if draw(st.booleans()):
            container["env"] = [{"name": "MODE", "value": draw(text_value)}]
        if draw(st.booleans()):
            container["ports"] = [{"containerPort": draw(st.integers(1, 65535))}]
        if native and draw(st.booleans()):
            container["restartPolicy"] = "Always"
        built.append(container)
    return built


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if draw(st.booleans()):
        metadata["name"] = draw(dns_label)
    else:
        metadata["generateName"] = draw(dns_label) + "-"
    if draw(st.booleans()):
        metadata["namespace"] = draw(st.sampled_from(["default", "shop", "kube-system", "batch"]))
    annotations = draw(st.dictionaries(annotation_key, text_value, max_size=4))
    annotations.update(draw(st.lists(oomdump_annotation, max_size=2)))
    if annotations or draw(st.booleans()):
        metadata["annotations"] = annotations
    if draw(st.booleans()):
        metadata["labels"] = draw(
            st.dictionaries(dns_label, st.sampled_from(["a", "b", "disabled"]), max_size=3)
        )
        if draw(st.integers(0, 5)) == 5:
            metadata["labels"]["oomdump.io/inject"] = "disabled"
    spec: dict[str, Any] = {"containers": draw(containers(draw(st.integers(1, 3))))}
    init_count = draw(st.integers(0, 2))
    if init_count:
        taken = {c["name"] for c in spec["containers"]}
        init = draw(containers(init_count, native=True))
        spec["initContainers"] = [c for c in init if c["name"] not in taken]
    if draw(st.booleans()):
        spec["volumes"] = [
            {"name": name, "emptyDir": {}}
            for name in draw(
                st.lists(st.one_of(dns_label, st.just("oomdump-dumps")), max_size=2, unique=True)
            )
        ]
    for flag in ("hostPID", "shareProcessNamespace"):
        if draw(st.integers(0, 4)) == 4:
            spec[flag] = flag == "shareProcessNamespace" or draw(st.booleans())
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


configs = st.builds(
    InjectConfig,
    image=st.just("ghcr.io/oomdump/oomdump:0.1.0"),
    mode=st.sampled_from(["container", "native"]),
    defaults=st.sampled_from(
        [
            SidecarDefaults(),
            SidecarDefaults(profile="least-privilege"),
            SidecarDefaults(env={"CRITICAL": "70", "PPROF_PATH": "/heap?t=$(SECRET)$$"}),
        ]
    ),
)


def admission_body(
    pod: Any, namespace: str | None, uid: Any = "u-1", operation: Any = "CREATE"
) -> bytes:
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": operation,
        "object": pod,
    }
    if namespace is not None:
        request["namespace"] = namespace
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    return json.dumps(review).encode()


def our_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The patch exactly as the webhook answers it (base64 JSON in the response)."""
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


def sidecar_of(pod: dict[str, Any], mode: str) -> dict[str, Any]:
    where = pod["spec"]["initContainers"] if mode == "native" else pod["spec"]["containers"]
    (sidecar,) = [c for c in where if c["name"] == CONTAINER_NAME]
    return sidecar


@SETTINGS
@given(
    pod=pods(),
    config=configs,
    namespace=st.sampled_from(["shop", None, "payments", "oomdump-system"]),
)
def test_injection_properties(
    pod: dict[str, Any], config: InjectConfig, namespace: str | None
) -> None:
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)  # the generator makes valid pods
    pristine = copy.deepcopy(pod)
    decision = admit(decode(admission_body(pod, namespace)), config)
    expected = inject(pristine, config, namespace)
    event(decision.reason)
    assert pod == pristine, "the webhook modified its input"
    response = json.loads(decision.body)["response"]
    assert response["uid"] == "u-1"
    assert (decision.result, decision.reason) == (expected.result, expected.reason)
    if decision.result != "injected":
        assert "patch" not in response
        assert response["allowed"] is (decision.result == "skipped")
        assert decision.reason in response["warnings"][0]
        return
    # What the API server stores: our answer applied to what it sent.
    result = jsonpatch.apply_patch(pristine, our_patch(response))
    assert result == expected.pod
    kubernetes_validate.validate(result, K8S_VERSION, strict=True)
    spec, old_spec = result["spec"], pristine["spec"]
    assert spec["shareProcessNamespace"] is True
    sidecar = sidecar_of(result, config.mode)
    others = [c for c in spec["containers"] if c["name"] != CONTAINER_NAME]
    assert others == old_spec["containers"], "the app's containers changed"
    init_others = [c for c in spec.get("initContainers", []) if c["name"] != CONTAINER_NAME]
    assert init_others == old_spec.get("initContainers", [])
    assert spec["volumes"][: len(old_spec.get("volumes", []))] == old_spec.get("volumes", [])
    volumes = {v["name"] for v in spec["volumes"]}
    assert len(volumes) == len(spec["volumes"]), "two volumes share a name"
    assert {m["name"] for m in sidecar["volumeMounts"]} <= volumes
    # Each `$` is doubled, so the kubelet expands nothing (tests/webhook/test_env_escaping.py).
    values = {e["name"]: e["value"] for e in sidecar["env"] if "value" in e}
    assert all("$" not in value.replace("$$", "") for value in values.values())
    literal = {name: value.replace("$$", "$") for name, value in values.items()}
    overrides = env_overrides(pristine["metadata"].get("annotations") or {})
    assert literal.items() >= {(k, v) for k, v in overrides.items() if v}  # "" removes one
    assert not {k for k, v in overrides.items() if not v} & literal.keys()
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    assert sidecar["securityContext"]["privileged"] is config.defaults.privileged
    metadata, old_metadata = result["metadata"], pristine["metadata"]
    annotations = dict(metadata["annotations"])
    assert json.loads(annotations.pop(STATUS))["container"] == CONTAINER_NAME
    assert annotations == (old_metadata.get("annotations") or {})
    assert metadata.get("labels") == old_metadata.get("labels")
    again = admit(decode(admission_body(result, namespace)), config)
    assert (again.result, again.reason) == ("skipped", "already-injected")
    assert "patch" not in json.loads(again.body)["response"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    pod=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"metadata": json_values, "spec": json_values}, optional={"kind": json_values}
        ),
        st.fixed_dictionaries(
            {"spec": st.fixed_dictionaries({}, optional={
                "containers": json_values, "initContainers": json_values, "volumes": json_values,
                "hostPID": json_values,
            })},
            optional={"metadata": st.fixed_dictionaries({}, optional={
                "annotations": json_values, "labels": json_values, "namespace": json_values,
            })},
        ),
    ),
    uid=st.one_of(st.text(max_size=4), json_values),
    operation=json_values | st.just("CREATE"),
)  # fmt: skip
def test_arbitrary_input_is_answered_or_refused_never_crashes(
    pod: Any, uid: Any, operation: Any
) -> None:
    body = json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": operation,
                "object": pod,
            },
        }
    ).encode()
    config = InjectConfig(image="img")
    pristine = copy.deepcopy(pod)
    try:
        decision = admit(decode(body), config)
    except (BadReview, MalformedPod):
        return
    response = json.loads(decision.body)["response"]
    assert response["uid"] == uid
    if "patch" in response:
        result = jsonpatch.apply_patch(pristine, our_patch(response))
        assert result == inject(pristine, config).pod
