"""Golden files: input pod -> expected pod, patch, result and reason (tests/golden)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonpatch
import kubernetes_validate
import pytest

from tests.webhook.golden import (
    GoldenUpdateRefused,
    case_names,
    expected_path,
    input_pod,
    load_yaml,
    run_case,
    update_requested,
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
    try:
        rewrite = update_requested()
    except GoldenUpdateRefused as refusal:
        pytest.fail(str(refusal), pytrace=False)
    if rewrite:
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


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_update_golden_is_refused_under_ci(ci: str) -> None:
    with pytest.raises(GoldenUpdateRefused, match="refused when CI is set"):
        update_requested({"UPDATE_GOLDEN": "1", "CI": ci})


@pytest.mark.parametrize("ci", [None, "", "0", "false", "False"])
def test_update_golden_works_outside_ci(ci: str | None) -> None:
    environ = {"UPDATE_GOLDEN": "1"} | ({} if ci is None else {"CI": ci})
    assert update_requested(environ) is True
    assert update_requested({"CI": "true"}) is False  # no update asked: nothing refused


def test_a_golden_run_with_update_golden_in_ci_fails_and_writes_nothing() -> None:
    """The real pytest run, as CI would start it with UPDATE_GOLDEN=1 left on."""
    name = CASES[0]
    before = expected_path(name).read_bytes(), expected_path(name).stat().st_mtime_ns
    finished = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"tests/webhook/test_golden.py::test_golden_case[{name}]"],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300,
        env={**os.environ, "CI": "true", "UPDATE_GOLDEN": "1"},
    )  # fmt: skip
    assert finished.returncode == 1, finished.stdout
    assert "UPDATE_GOLDEN=1 is refused when CI is set" in finished.stdout
    assert (expected_path(name).read_bytes(), expected_path(name).stat().st_mtime_ns) == before
