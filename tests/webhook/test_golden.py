"""Golden files: input pod -> expected pod, patch, result and reason (tests/golden)."""

import json
import os

import jsonpatch
import kubernetes_validate
import pytest

from tests.webhook.golden import (
    case_names,
    expected_path,
    input_pod,
    load_yaml,
    run_case,
    write_expected,
)
from tests.webhook.helpers import K8S_VERSION

CASES = case_names()


def test_there_are_enough_golden_cases() -> None:
    assert len(CASES) >= 12


@pytest.mark.parametrize("name", CASES)
def test_golden_case(name: str) -> None:
    actual = run_case(name)
    # Plain data, as the expected file holds it: the injected pod and the patch share
    # sub-objects, which YAML would otherwise write as anchors.
    actual = json.loads(json.dumps(actual))
    if os.environ.get("UPDATE_GOLDEN") == "1":
        write_expected(name, actual)
    assert expected_path(name).is_file(), f"no expected file; run with UPDATE_GOLDEN=1: {name}"
    expected = load_yaml(expected_path(name))
    assert actual == expected


@pytest.mark.parametrize("name", CASES)
def test_golden_expectations_are_consistent(name: str) -> None:
    """Each expected file is self-consistent: its patch turns the input into its pod."""
    expected = load_yaml(expected_path(name))
    case = load_yaml(expected_path(name).with_name(f"{name}.input.yaml"))
    original = input_pod(case)
    assert jsonpatch.apply_patch(original, expected["patch"]) == expected["pod"]
    if expected["result"] == "injected":
        kubernetes_validate.validate(expected["pod"], K8S_VERSION, strict=True)
        assert expected["warnings"] == []
    else:
        assert expected["patch"] == []
        assert expected["reason"] in expected["warnings"][0]
