"""The chart refuses what the webhook's registry refuses, with the registry's words, before
anything reaches a cluster (values.schema.json and templates/_validate.tpl); values.yaml
documents every value the schema knows."""

import json
import re

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from testinfra import helm_schema
from testinfra.helm import CHART, HelmError, template
from testinfra.helm_values import documented, leaf_keys, markdown_table
from webhook.annotations import BY_ENV
from webhook.config import DefaultsError, parse_defaults

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def test_generated_files_match_the_registry() -> None:
    """values.schema.json and _registry.tpl are what the registry gives now
    (`make render-base` rewrites them)."""
    assert helm_schema.stale() == []


def test_the_schema_limits_are_the_registry_limits() -> None:
    properties = SCHEMA["properties"]
    assert (properties["critical"]["minimum"], properties["critical"]["maximum"]) == (1, 99)
    assert properties["prefix"]["maxLength"] == 512
    assert BY_ENV["BUCKET"].allowed in properties["bucket"]["description"]
    rules = helm_schema.registry()["durations"]
    assert (rules["cooldown"]["minNanoseconds"], rules["cooldown"]["maxNanoseconds"]) == (
        10**9,
        24 * 3600 * 10**9,
    )
    assert (rules["watchTime"]["minNanoseconds"], rules["watchTime"]["maxNanoseconds"]) == (
        5 * 10**6,
        10 * 10**9,
    )


def registry_accepts(env: str, value: str) -> bool:
    try:
        parse_defaults(yaml.safe_dump({"env": {env: value}}), "probe")
    except DefaultsError:
        return False
    return True


def helm_accepts(key: str, value: str) -> bool:
    """Whether `helm template --set-string key=value` renders (typed for critical)."""
    setting = f"{key}={value}"
    try:
        if key == "critical":  # an integer in the schema, as `--set critical=85` gives
            template([setting])
        else:
            template(set_string=[setting])
    except HelmError:
        return False
    return True


SAMPLES = {
    "critical": ["1", "99", "0", "100", "50", "abc"],
    "cooldown": ["1s", "24h", "999ms", "24h0m0.001s", "1h30m", "0.5s", "1.5s", "90m", "0", "25h",
                 "1e3s", "-1s", "abc"],
    "watchTime": ["5ms", "10s", "4ms", "10.001s", "100ms", "5000us", "5000µs", "4999999ns",
                  "0.1s", "1m"],
    "bucket": ["", "abc", "ab", "a" * 63, "a" * 64, "1.2.3.4", "999.1.1.1", "01.1.1.1",
               "my..bucket", "my.-bucket", "my--bucket", "-abc", "abc-", "Abc", "a_b"],
    "prefix": ["", "prod/", "prod", "a/b/", "/x", "a//b", "./", "a/../b", ".../", "a.b/c_d-e",
               "x" * 512, "x" * 513, "a b"],
}
ENV = {"critical": "CRITICAL", "cooldown": "COOLDOWN", "watchTime": "WATCH_TIME",
       "bucket": "BUCKET", "prefix": "S3_PREFIX"}  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value"), [(key, value) for key, values in SAMPLES.items() for value in values]
)
def test_helm_accepts_exactly_what_the_webhook_accepts(helm_built, key: str, value: str) -> None:
    assert helm_accepts(key, value) == registry_accepts(ENV[key], value)


def _chart_accepts_text(key: str, value: str) -> bool:
    """The schema and the templates' pattern checks, as Python evaluates them: the same
    patterns helm applies (Go's regexp reads these the same way), for many values fast."""
    try:
        jsonschema.validate(value, SCHEMA["properties"][key])
    except jsonschema.ValidationError:
        return False
    rule = helm_schema.registry()["refused"].get(key)
    return not (rule and any(re.search(p, value) for p in rule["patterns"]))


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab09.-_/A ", max_size=70))
def test_bucket_and_prefix_patterns_agree_with_the_registry(text: str) -> None:
    for key in ("bucket", "prefix"):
        assert _chart_accepts_text(key, text) == registry_accepts(ENV[key], text), key


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["critical=abc"], "at '/critical': got string, want integer"),
        (["critical=100"], "at '/critical': maximum: got 100, want 99"),
        (["cooldown=25h"], "cooldown=25h (COOLDOWN, as the annotation oomdump.io/cooldown): "
                           "a Go duration from 1s to 24h"),
        (["bucket=1.2.3.4"], "bucket=1.2.3.4 (BUCKET, as the annotation oomdump.io/bucket): "
                             "an S3 bucket name"),
        (["sidecarMode=classic"], "value must be one of 'container', 'native'"),
        (["privilegeProfile=least-privilege", "detectMode=events"],
         "detectMode=events needs a writable cgroupfs"),
        (["privilegeProfile=least-privilege", "extraEnv.EMERGENCY_BRAKE=on"],
         "extraEnv.EMERGENCY_BRAKE needs a writable cgroupfs"),
        (["extraEnv.CRITICAL=5"], "invalid propertyName 'CRITICAL'"),  # critical's own
        (["extraEnv.POD_NAME=x"], "invalid propertyName 'POD_NAME'"),  # set by the webhook
        (["webhook.replicas=1"], "minAvailable=1 must be less than webhook.replicas=1"),
        (["webhook.failurePolicy=Never"], "at '/webhook/failurePolicy'"),
        (["webhook.timeoutSeconds=31"], "at '/webhook/timeoutSeconds'"),
        (["certificates.mode=cert-manager"], "needs cert-manager installed first"),
        (["critcal=5"], "additional properties 'critcal' not allowed"),
    ],
)  # fmt: skip
def test_a_bad_value_is_refused_with_a_message_naming_it(
    helm_built, settings: list[str], message: str
) -> None:
    with pytest.raises(HelmError) as refused:
        template(settings)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("kube_version", "settings", "message"),
    [
        ("1.26.0", [], "oomdump needs Kubernetes >= 1.27; this cluster runs v1.26.0"),
        ("1.28.0", ["sidecarMode=native"], "sidecarMode=native needs Kubernetes >= 1.29"),
    ],
)
def test_a_too_old_cluster_is_refused(
    helm_built, kube_version: str, settings: list[str], message: str
) -> None:
    with pytest.raises(HelmError) as refused:
        template(settings, kube_version=kube_version)
    assert message in str(refused.value)
    template(settings, kube_version="1.29.0")  # the oldest that takes every variant


def test_values_yaml_documents_every_value_the_schema_knows() -> None:
    comments = documented()
    known = leaf_keys()
    # Free-form maps (resources, selectors, labels) are documented by their own key.
    assert "webhook.resources" in known and "webhook.resources.requests" not in known
    assert [key for key in known if not comments.get(key)] == []
    assert set(known) == set(_values_leaves(VALUES, "", set(known)))


def _values_leaves(values: dict, prefix: str, known: set[str]) -> list[str]:
    """values.yaml's keys down to the schema's leaves (so none is missing from either)."""
    found = []
    for key, value in values.items():
        dotted = prefix + key
        if isinstance(value, dict) and dotted not in known:
            found += _values_leaves(value, dotted + ".", known)
        else:
            found.append(dotted)
    return found


def test_the_values_table_lists_every_value_with_its_meaning() -> None:
    rows = markdown_table().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == leaf_keys()
    for row in rows:
        assert row.split(" | ")[-1].strip(" |"), row
    critical = "| `critical` | `70` | CRITICAL: percent of the container's cgroup memory"
    assert any(row.startswith(critical) for row in rows)
