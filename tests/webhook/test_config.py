"""The defaults file (ConfigMap oomdump-sidecar-defaults, key defaults.yaml)."""

from pathlib import Path

import pytest

from webhook.config import (
    BUILTIN_ENV,
    BUILTIN_RESOURCES,
    DefaultsError,
    load_defaults,
    parse_defaults,
)

AGREED_EXAMPLE = """
env:
  CRITICAL: "70"
  COOLDOWN: 30s
  WATCH_TIME: 100ms
  BUCKET: ""
  S3_PREFIX: ""
  S3_ENDPOINT_URL: ""
  AWS_REGION: ""
envFrom:
  - secretRef: {name: oomdump-s3, optional: true}
resources: {requests: {cpu: 10m, memory: 64Mi}, limits: {cpu: 200m, memory: 128Mi}}
privileged: true
"""


def test_the_agreed_example_parses_and_drops_empty_values() -> None:
    defaults = parse_defaults(AGREED_EXAMPLE, "defaults.yaml")
    assert defaults.env == {"CRITICAL": "70", "COOLDOWN": "30s", "WATCH_TIME": "100ms"}
    assert defaults.env_from == [{"secretRef": {"name": "oomdump-s3", "optional": True}}]
    assert defaults.resources == BUILTIN_RESOURCES
    assert defaults.privileged is True
    assert defaults.profile == "privileged"


@pytest.mark.parametrize(
    ("text", "profile"),
    [
        ("", "privileged"),
        ("privilegeProfile: privileged", "privileged"),
        ("privilegeProfile: least-privilege", "least-privilege"),
        ("privileged: true", "privileged"),  # the older spelling keeps working
        ("privileged: false", "least-privilege"),
        ("privileged: false\nprivilegeProfile: least-privilege", "least-privilege"),
    ],
)
def test_privilege_profile(text: str, profile: str) -> None:
    assert parse_defaults(text, "f").profile == profile


def test_empty_file_and_no_file_mean_builtin_defaults() -> None:
    assert parse_defaults("", "f").env == BUILTIN_ENV
    assert load_defaults(None).env == BUILTIN_ENV


def test_partial_file_keeps_builtins_and_numbers_become_strings() -> None:
    defaults = parse_defaults("env: {CRITICAL: 80, MEMORY_METRIC: usage}\nprivileged: false", "f")
    assert defaults.env == {**BUILTIN_ENV, "CRITICAL": "80", "MEMORY_METRIC": "usage"}
    assert defaults.privileged is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("env: [1, 2", "not valid YAML"),
        ("- a\n- b", "expected a mapping"),
        ("envs: {}", "unknown keys \\['envs'\\]"),
        ("env: [CRITICAL]", "env must be a mapping"),
        ("env: {CRITICAL: '150'}", "env.CRITICAL='150': an integer percent from 1 to 99"),
        ("env: {COOLDOWN: forever}", "env.COOLDOWN"),
        ("env: {BUCKET: Bad_Bucket}", "env.BUCKET"),
        ("env: {DUMP_DIR: /data}", "env.DUMP_DIR is set by the webhook itself"),
        ("env: {POD_NAME: x}", "env.POD_NAME is set by the webhook itself"),
        ("env: {CRITICAL: [70]}", "env.CRITICAL must be a string"),
        ("env: {CRITICAL: true}", "env.CRITICAL must be a string"),
        ("envFrom: {secretRef: {name: s}}", "envFrom must be a list"),
        ("resources: {min: {}}", "resources must be a mapping"),
        ("privileged: 'yes'", "privileged must be true or false"),
        (
            "privilegeProfile: restricted",
            "privilegeProfile must be one of privileged, least-privilege, not 'restricted'",
        ),
        ("privilegeProfile: [privileged]", "privilegeProfile must be one of"),
        (
            "privilegeProfile: least-privilege\nenv: {DETECT_MODE: events}",
            "DETECT_MODE=events needs a writable cgroupfs",
        ),
        (
            "privilegeProfile: least-privilege\nenv: {EMERGENCY_BRAKE: 'on'}",
            "EMERGENCY_BRAKE needs a writable cgroupfs",
        ),
        (
            "privileged: true\nprivilegeProfile: least-privilege",
            "privileged: true contradicts privilegeProfile: least-privilege",
        ),
    ],
)
def test_invalid_files_are_refused_naming_the_file_and_problem(text: str, message: str) -> None:
    with pytest.raises(DefaultsError, match=message) as caught:
        parse_defaults(text, "/etc/oomdump/defaults.yaml")
    assert str(caught.value).startswith("/etc/oomdump/defaults.yaml: ")


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DefaultsError, match="cannot read the defaults file"):
        load_defaults(tmp_path / "missing.yaml")
