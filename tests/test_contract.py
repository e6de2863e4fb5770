"""The one registry of the watcher's variables (oomdump.watcher_env): the watcher's Config,
the webhook's pod overrides and the README's watcher table all come from it."""

import dataclasses
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

from oomdump import contract, watcher_env
from sidecar.config import Config, MemoryMetric, load_config
from webhook.annotations import BY_ENV
from webhook.config import BUILTIN_ENV, RESERVED_ENV

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
REGENERATE = ".venv/bin/python -m oomdump.watcher_env README.md"
WATCHED = [variable for variable in watcher_env.VARIABLES if variable.read_by == "watcher"]


def test_readme_watcher_table_matches_the_registry() -> None:
    block = watcher_env.readme_block(README.read_text(encoding="utf-8"))
    assert block == watcher_env.markdown_table(), (
        "README.md's watcher table drifted from oomdump/watcher_env.py; regenerate it with "
        f"`{REGENERATE}`"
    )


def test_write_readme_replaces_only_the_generated_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    before = "# Title\n\ntext above\n\n"
    after = "\ntext below\n"
    stale = f"{watcher_env.BEGIN}\n| old | table |\n{watcher_env.END}\n"
    readme.write_text(before + stale + after, encoding="utf-8")
    assert watcher_env.write_readme(readme) is True
    expected = f"{before}{watcher_env.BEGIN}\n{watcher_env.markdown_table()}{watcher_env.END}\n"
    assert readme.read_text(encoding="utf-8") == expected + after
    assert watcher_env.write_readme(readme) is False  # already current: left alone


def test_the_module_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "oomdump.watcher_env"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=REPO,
    )
    assert result.stdout == watcher_env.markdown_table()


def test_every_cell_stays_in_its_column() -> None:
    for variable in watcher_env.VARIABLES:
        for cell in (variable.default_cell(), variable.allowed, variable.meaning):
            assert cell and "|" not in cell and "\n" not in cell, (variable.name, cell)
    names = [variable.name for variable in watcher_env.VARIABLES]
    assert len(set(names)) == len(names)


def _accepts(hint: object, value: object) -> bool:
    """Whether `value` fits the type hint of a Config field."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arm, value) for arm in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, tuple) and all(_accepts(item, part) for part in value)
    if hint is type(None):
        return value is None
    return isinstance(value, hint)  # type: ignore[arg-type]


def test_each_config_field_is_filled_by_one_variable_of_its_type() -> None:
    hints = typing.get_type_hints(Config)
    config = load_config({})
    assert len(WATCHED) == len(dataclasses.fields(Config))
    for field in dataclasses.fields(Config):
        assert _accepts(hints[field.name], getattr(config, field.name)), field.name


def test_each_default_is_allowed_by_its_own_rule() -> None:
    for variable in watcher_env.VARIABLES:
        if variable.default is not None:
            variable.rule.parse(variable.name, variable.default)
        if variable.pod_override and variable.default is not None:
            # The webhook writes the default into pods as it is, so it must be normal.
            assert variable.normalize(variable.default) == variable.default


@pytest.mark.parametrize("variable", WATCHED, ids=lambda variable: variable.name)
def test_a_blank_value_means_the_default(variable: watcher_env.Variable[object]) -> None:
    assert load_config({variable.name: "  "}) == load_config({})


def test_the_pod_overridable_ones_are_the_annotations() -> None:
    pod = [variable.name for variable in watcher_env.VARIABLES if variable.pod_override]
    assert pod == [variable.name for variable in contract.VARIABLES]
    assert set(pod) == set(BY_ENV)
    assert set(pod) == {"CRITICAL", "COOLDOWN", "WATCH_TIME", "PPROF_PORTS", "BUCKET", "S3_PREFIX"}
    for variable in watcher_env.VARIABLES:
        # Only these have the check the webhook runs on annotations and its defaults file.
        assert (variable.rule.check is not None) == variable.pod_override, variable.name
        assert variable.read_by == "watcher" or not variable.pod_override
    for name, entry in BY_ENV.items():
        assert (entry.allowed, entry.meaning) == (
            watcher_env.BY_NAME[name].allowed,
            watcher_env.BY_NAME[name].meaning,
        )


def test_only_pod_overridable_variables_normalize() -> None:
    with pytest.raises(TypeError, match="DETECT_MODE cannot be overridden by a pod"):
        watcher_env.BY_NAME["DETECT_MODE"].normalize("poll")


def test_the_webhooks_builtin_defaults_are_the_registrys() -> None:
    assert {name: watcher_env.BY_NAME[name].default for name in BUILTIN_ENV} == BUILTIN_ENV


def test_what_the_webhook_sets_says_so() -> None:
    says_so = {
        variable.name
        for variable in watcher_env.VARIABLES
        if "set by the webhook" in variable.meaning
    }
    assert says_so == RESERVED_ENV


def test_the_typed_choices_are_the_registrys() -> None:
    assert typing.get_args(MemoryMetric) == watcher_env.MEMORY_METRICS
