"""The chart's checks of watcher defaults, generated from the webhook's own registry.

`values.schema.json` (types, enums, patterns, lengths) and `templates/_registry.tpl` (the
duration limits and messages the templates check, which a JSON schema cannot) are written
from webhook/annotations.py, webhook/config.py and sidecar/config.py, so a limit changed
there changes the chart with `make render-base`, and tests/helm fails until it is run.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oomdump import durations
from sidecar.config import DETECT_MODES
from webhook.annotations import BY_ENV
from webhook.config import PRIVILEGE_PROFILES, RESERVED_ENV, SIDECAR_MODES

CHART = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "oomdump"
SCHEMA_PATH = CHART / "values.schema.json"
REGISTRY_PATH = CHART / "templates" / "_registry.tpl"

# Chart value -> the watcher variable it sets in the defaults ConfigMap.
VALUE_ENV = {
    "critical": "CRITICAL",
    "cooldown": "COOLDOWN",
    "watchTime": "WATCH_TIME",
    "detectMode": "DETECT_MODE",
    "bucket": "BUCKET",
    "prefix": "S3_PREFIX",
    "endpoint": "S3_ENDPOINT_URL",
    "region": "AWS_REGION",
}
DURATIONS = ("cooldown", "watchTime")
# Far past any limit the registry sets (about 11 days in nanoseconds is 2**50).
_SEARCH_CEILING = 2**62

# Go's duration grammar without a sign, as oomdump.durations reads it.
DURATION_PATTERN = f"^(0|({durations._PART.pattern})+)$"
# S3 names: labels of letters and digits joined by one dot or by hyphens, so never `..`,
# `.-` or `-.` (webhook/annotations.py, _bucket). The length is checked apart.
BUCKET_PATTERN = r"^$|^[a-z0-9]+((-+|\.)[a-z0-9]+)*$"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4_PATTERN = rf"^({_OCTET}\.){{3}}{_OCTET}$"
# A key prefix of segments that are neither empty nor `.` or `..` (_prefix).
_SEGMENT = r"([A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*|\.\.\.+)"
PREFIX_PATTERN = rf"^$|^{_SEGMENT}(/{_SEGMENT})*/?$"
# What the schema's patterns let through but the registry refuses, checked by the
# templates so that the refusal quotes the registry's own words: 1-2 character and
# IP-address bucket names.
REFUSED = {"bucket": ["^.{1,2}$", IPV4_PATTERN]}
_NANOSECONDS = {unit: round(seconds * 1e9) for unit, seconds in durations._UNIT_SECONDS.items()}


def _accepts(env: str, value: str) -> bool:
    try:
        BY_ENV[env].normalize(value)
    except ValueError:
        return False
    return True


def _edges(accepted: Callable[[int], bool], inside: int, ceiling: int) -> tuple[int, int]:
    """The lowest and highest integer `accepted` takes, given one it takes (`inside`) and
    that it takes one unbroken range; found by bisection, so from the rule's behaviour
    rather than from wherever its constants live."""
    low, high = 0, inside  # accepted(high); find the first accepted above low
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if accepted(middle) else (middle, high)
    first = high if not accepted(low) else low
    low, high = inside, ceiling
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if accepted(middle) else (low, middle)
    return first, low


def _percent_range() -> tuple[int, int]:
    """The lowest and highest percent the registry's CRITICAL rule accepts."""
    low, high = _edges(lambda n: _accepts("CRITICAL", str(n)), 50, 1000)
    if not all(_accepts("CRITICAL", str(n)) for n in range(low, high + 1)):
        raise ValueError("CRITICAL no longer accepts one range of integers; update the schema")
    return low, high


def duration_range(value: str) -> tuple[int, int]:
    """The shortest and longest duration, in nanoseconds, the rule of `value` accepts."""
    env = VALUE_ENV[value]
    example = BY_ENV[env].example
    inside = round(durations.parse_duration(example) * 1e9)
    return _edges(lambda n: _accepts(env, f"{n}ns"), inside, _SEARCH_CEILING)


def _longest(env: str, inside: int) -> int:
    """The most characters a value of `a`s may have under the rule of `env`."""
    return _edges(lambda n: _accepts(env, "a" * n), inside, 100_000)[1]


def _described(value: str, extra: dict[str, Any]) -> dict[str, Any]:
    env = VALUE_ENV[value]
    entry = BY_ENV.get(env)
    where = f"{env}; as the annotation {entry.key}: {entry.allowed}" if entry else env
    return {"description": where, **extra}


def _object(properties: dict[str, Any], required: bool = True) -> dict[str, Any]:
    shape: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    if required:
        shape["required"] = sorted(properties)
    return shape


_STRING: dict[str, Any] = {"type": "string"}
_BOOL: dict[str, Any] = {"type": "boolean"}
_MAP: dict[str, Any] = {"type": "object"}
_LABELS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
_RESOURCES = _object({"requests": _MAP, "limits": _MAP}, required=False)


def schema() -> dict[str, Any]:
    low, high = _percent_range()
    owned_env = sorted(set(VALUE_ENV.values()) | RESERVED_ENV)
    watcher = {
        "critical": _described("critical", {"type": "integer", "minimum": low, "maximum": high}),
        "cooldown": _described("cooldown", {"type": "string", "pattern": DURATION_PATTERN}),
        "watchTime": _described("watchTime", {"type": "string", "pattern": DURATION_PATTERN}),
        "detectMode": _described("detectMode", {"enum": ["", *DETECT_MODES]}),
        "bucket": _described(
            "bucket",
            {
                "type": "string",
                "maxLength": _longest("BUCKET", 3),
                "pattern": BUCKET_PATTERN,
            },
        ),
        "prefix": _described(
            "prefix",
            {"type": "string", "maxLength": _longest("S3_PREFIX", 1), "pattern": PREFIX_PATTERN},
        ),
        "endpoint": _described("endpoint", {"type": "string", "pattern": r"^$|^https?://\S+$"}),
        "region": _described("region", {"type": "string", "pattern": r"^[a-z0-9-]*$"}),
    }
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "oomdump chart values (generated by testinfra/helm_schema.py)",
        **_object(
            {
                "image": _object(
                    {
                        "repository": {"type": "string", "minLength": 1},
                        "tag": _STRING,
                        "pullPolicy": {"enum": ["", "Always", "IfNotPresent", "Never"]},
                        "pullSecrets": {"type": "array", "items": {"type": "string"}},
                    }
                ),
                "namespace": _object({"create": _BOOL, "labels": _LABELS}),
                "releaseLabels": _BOOL,
                "webhook": _object(
                    {
                        "replicas": {"type": "integer", "minimum": 1},
                        "resources": _RESOURCES,
                        "podDisruptionBudget": _object(
                            {"enabled": _BOOL, "minAvailable": {"type": "integer", "minimum": 0}}
                        ),
                        "failurePolicy": {"enum": ["Ignore", "Fail"]},
                        "timeoutSeconds": {"type": "integer", "minimum": 1, "maximum": 30},
                        "namespaceSelector": _MAP,
                        "objectSelector": _MAP,
                    }
                ),
                "sidecarMode": {"enum": list(SIDECAR_MODES)},
                **watcher,
                "credentialsSecret": {
                    "type": "string",
                    "pattern": r"^$|^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                    "maxLength": 253,
                },
                "extraEnv": {
                    "type": "object",
                    "propertyNames": {
                        "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                        "not": {"enum": owned_env},
                    },
                    "additionalProperties": {"type": ["string", "number"]},
                },
                "sidecarResources": _RESOURCES,
                "privilegeProfile": {"enum": list(PRIVILEGE_PROFILES)},
                "certificates": _object(
                    {
                        "mode": {"enum": ["bootstrap", "cert-manager"]},
                        "bootstrap": _object(
                            {
                                "ownSecret": _BOOL,
                                "resources": _RESOURCES,
                                "reconcilerResources": _RESOURCES,
                            }
                        ),
                    }
                ),
                "metrics": _object(
                    {
                        "serviceMonitor": _object(
                            {
                                "enabled": _BOOL,
                                "interval": {"type": "string", "pattern": DURATION_PATTERN},
                                "labels": _LABELS,
                            }
                        ),
                        "prometheusRule": _object({"enabled": _BOOL, "labels": _LABELS}),
                    }
                ),
            }
        ),
    }


def registry() -> dict[str, Any]:
    """What templates/_validate.tpl reads: the duration grammar and each duration's limits."""
    rules = {}
    for value in DURATIONS:
        entry = BY_ENV[VALUE_ENV[value]]
        low, high = duration_range(value)
        rules[value] = {
            "env": entry.env,
            "annotation": entry.key,
            "allowed": entry.allowed,
            "minNanoseconds": low,
            "maxNanoseconds": high,
        }
    refused = {}
    for value, patterns in REFUSED.items():
        entry = BY_ENV[VALUE_ENV[value]]
        refused[value] = {
            "env": entry.env,
            "annotation": entry.key,
            "allowed": entry.allowed,
            "patterns": patterns,
        }
    return {
        "durationPart": durations._PART.pattern,
        "unitNanoseconds": _NANOSECONDS,
        "durations": rules,
        "refused": refused,
    }


def schema_text() -> str:
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


def registry_text() -> str:
    body = json.dumps(registry(), indent=2, ensure_ascii=False, sort_keys=True)
    return (
        "{{- /* Generated from webhook/annotations.py by testinfra/helm_schema.py"
        " (make render-base); do not edit. */ -}}\n"
        '{{- define "oomdump.registry" -}}\n'
        f"{body}\n"
        "{{- end }}\n"
    )


def write() -> list[Path]:
    """Write both generated files; the paths that changed."""
    changed = []
    for path, text in ((SCHEMA_PATH, schema_text()), (REGISTRY_PATH, registry_text())):
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


def stale() -> list[Path]:
    """Generated files that differ from what the registry gives now."""
    pairs = ((SCHEMA_PATH, schema_text()), (REGISTRY_PATH, registry_text()))
    return [path for path, text in pairs if not path.exists() or path.read_text() != text]
