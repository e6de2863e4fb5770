"""testinfra.kustomize: the pinned kustomize renders, and reports a broken tree clearly."""

import subprocess
from pathlib import Path

import pytest

from testinfra.kustomize import KUSTOMIZE_VERSION, KustomizeError, kustomize_binary, render


def test_binary_is_the_pinned_release() -> None:
    result = subprocess.run(
        [str(kustomize_binary()), "version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert KUSTOMIZE_VERSION in result.stdout


def test_renders_generated_objects(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "configMapGenerator:\n- name: settings\n  literals: [a=1]\nnamespace: demo\n"
    )
    (obj,) = render(tmp_path)
    assert obj["kind"] == "ConfigMap"
    assert obj["metadata"]["name"].startswith("settings-")  # hash suffix: really kustomize
    assert (obj["metadata"]["namespace"], obj["data"]) == ("demo", {"a": "1"})


def test_broken_tree_raises_with_kustomize_message(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(KustomizeError, match=r"missing\.yaml"):
        render(tmp_path)
