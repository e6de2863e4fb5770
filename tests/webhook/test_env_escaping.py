"""Env values reach the watcher as written: checked with the kubelet's own expansion code."""

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.webhook.golden import expected_path, load_yaml
from tests.webhook.kubelet_env import container_environment
from webhook.config import InjectConfig, parse_defaults
from webhook.inject import CONTAINER_NAME, escape_env_value, inject

SECRETS = {"AWS_SECRET_ACCESS_KEY": "hunter2", "SECRET": "s3cr3t"}  # as envFrom would load them
DEFAULTS = """
env:
  PPROF_PATH: /debug/pprof/heap?x=$(AWS_SECRET_ACCESS_KEY)
  S3_ENDPOINT_URL: http://minio:9000/$$(SECRET)/$
  AWS_REGION: $(PPROF_PATH)
envFrom:
  - secretRef: {name: oomdump-s3, optional: true}
"""


def sidecar_of(defaults_text: str) -> dict[str, Any]:
    config = InjectConfig(image="img", defaults=parse_defaults(defaults_text, "defaults.yaml"))
    pod = {"spec": {"containers": [{"name": "app", "image": "app"}]}}
    outcome = inject(pod, config, "shop")
    assert outcome.result == "injected"
    (sidecar,) = [c for c in outcome.pod["spec"]["containers"] if c["name"] == CONTAINER_NAME]
    return sidecar


def test_the_watcher_sees_each_value_as_written() -> None:
    sidecar = sidecar_of(DEFAULTS)
    seen = container_environment(sidecar, SECRETS)
    assert seen["PPROF_PATH"] == "/debug/pprof/heap?x=$(AWS_SECRET_ACCESS_KEY)"
    assert seen["S3_ENDPOINT_URL"] == "http://minio:9000/$$(SECRET)/$"
    assert seen["AWS_REGION"] == "$(PPROF_PATH)"
    assert all("hunter2" not in value for name, value in seen.items() if name not in SECRETS)


def test_unescaped_values_would_be_expanded_by_the_kubelet() -> None:
    """The control: the same env, written as given, leaks the secret (what escaping stops)."""
    sidecar = sidecar_of(DEFAULTS)
    raw = {
        **sidecar,
        "env": [
            {**e, "value": e["value"].replace("$$", "$")} for e in sidecar["env"] if "value" in e
        ],
    }
    seen = container_environment(raw, SECRETS)
    assert seen["PPROF_PATH"] == "/debug/pprof/heap?x=hunter2"
    assert seen["AWS_REGION"] == "/debug/pprof/heap?x=hunter2"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet="$()AB_x", max_size=10), min_size=1, max_size=8))
def test_escaping_round_trips_through_the_kubelet(values: list[str]) -> None:
    names = [f"V{index}" for index in range(len(values))]
    env = [
        {"name": name, "value": escape_env_value(value)}
        for name, value in zip(names, values, strict=True)
    ]
    seen = container_environment({"env": env}, {"A": "expanded", "B": "expanded"})
    assert [seen[name] for name in names] == values


def test_the_golden_dollar_case_is_literal_for_the_kubelet() -> None:
    expected = load_yaml(expected_path("21-dollar-in-values-escaped"))
    (sidecar,) = [c for c in expected["pod"]["spec"]["containers"] if c["name"] == CONTAINER_NAME]
    seen = container_environment(sidecar, SECRETS)
    assert seen["PPROF_PATH"] == "/debug/pprof/heap?seconds=0&tag=$(SECRET)"
    assert seen["AWS_REGION"] == "eu-$$-1"
