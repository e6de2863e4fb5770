"""`helm lint --strict` is clean for the defaults and the variants that need no CRDs
(lint cannot advertise API versions; those variants are rendered in test_render.py)."""

import pytest

from testinfra.helm import CHART, run_helm
from tests.helm.conftest import VARIANTS


@pytest.mark.parametrize("variant", [name for name, (_, apis) in VARIANTS.items() if not apis])
def test_lint_strict_is_clean(helm_built, variant: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for value in VARIANTS[variant][0]:
        args += ["--set", value]
    result = run_helm(args)
    assert "0 chart(s) failed" in result.stdout
    warnings = [line for line in result.stdout.splitlines() if "[WARNING]" in line]
    assert warnings == []


def test_lint_strict_fails_on_a_refused_value(helm_built) -> None:
    """Guards the test above: lint runs the schema and the templates' checks."""
    with pytest.raises(RuntimeError, match="critical"):
        run_helm(["lint", "--strict", str(CHART), "--set", "critical=0"])
