"""Golden cases in tests/golden: `NAME.input.yaml` -> `NAME.expected.yaml`.

An input holds `namespace` (the request's), optional `mode`, `defaults` (a defaults.yaml
document) and `notify` (`url` and `ca`: where watchers send notices), and either `pod` or
`from_expected` (another case whose expected pod is the input, for second-pass checks).
Run with UPDATE_GOLDEN=1 to rewrite the expected files,
then review the diff. Under CI (the `CI` variable set to anything but "", "0" or "false")
UPDATE_GOLDEN=1 is refused: a rewrite there would compare the output with itself.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from webhook.config import InjectConfig, Notify, parse_defaults
from webhook.inject import inject
from webhook.patch import make_patch

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
IMAGE = "ghcr.io/oomdump/oomdump:0.1.0"


class GoldenUpdateRefused(RuntimeError):
    """UPDATE_GOLDEN=1 where expected files must be checked, not written."""


def update_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether to rewrite the expected files; GoldenUpdateRefused under CI."""
    if environ.get("UPDATE_GOLDEN") != "1":
        return False
    ci = environ.get("CI", "")
    if ci.lower() not in ("", "0", "false"):
        raise GoldenUpdateRefused(
            f"UPDATE_GOLDEN=1 is refused when CI is set (CI={ci!r}): in CI the golden files"
            " are checked, never rewritten. Rewrite them locally and commit the reviewed diff."
        )
    return True


def case_names() -> list[str]:
    return sorted(path.name.removesuffix(".input.yaml") for path in GOLDEN.glob("*.input.yaml"))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def expected_path(name: str) -> Path:
    return GOLDEN / f"{name}.expected.yaml"


def input_pod(case: dict[str, Any]) -> dict[str, Any]:
    if "from_expected" in case:
        return load_yaml(expected_path(case["from_expected"]))["pod"]
    return case["pod"]


def run_case(name: str) -> dict[str, Any]:
    case = load_yaml(GOLDEN / f"{name}.input.yaml")
    defaults = parse_defaults(yaml.safe_dump(case.get("defaults") or {}), f"{name} defaults")
    notify = case.get("notify")
    config = InjectConfig(
        image=IMAGE,
        mode=case.get("mode", "container"),
        defaults=defaults,
        version="0.1.0",
        notify=Notify(notify["url"], notify["ca"]) if notify else None,
    )
    pod = input_pod(case)
    outcome = inject(pod, config, case["namespace"])
    return {
        "result": outcome.result,
        "reason": outcome.reason,
        "message": outcome.message,
        "warnings": list(outcome.warnings),
        "patch": make_patch(pod, outcome.pod) if outcome.pod is not pod else [],
        "pod": outcome.pod,
    }


def write_expected(name: str, actual: dict[str, Any]) -> None:
    text = yaml.safe_dump(actual, sort_keys=False, width=100, allow_unicode=True)
    expected_path(name).write_text(text, encoding="utf-8")
