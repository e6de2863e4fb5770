"""The one registry of the watcher's variables (oomdump.watcher_env): the watcher's Config,
the webhook's pod overrides and the README's watcher table (tests/test_readme_tables.py)
all come from it."""

import dataclasses
import types
import typing
from pathlib import Path

import pytest

from oomdump import contract, watcher_env
from sidecar.config import Config, MemoryMetric, load_config
from webhook.annotations import BY_ENV
from webhook.config import BUILTIN_ENV, RESERVED_ENV

REPO = Path(__file__).resolve().parent.parent
WATCHED = [variable for variable in watcher_env.VARIABLES if variable.read_by == "watcher"]


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
