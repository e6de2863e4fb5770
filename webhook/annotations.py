"""The one registry of `oomdump.io/*` pod annotations: validation and the README table.

Each entry names the annotation, the watcher environment variable it overrides (if any),
what values are allowed and a validator that returns the value the watcher gets; for the
watcher's variables those come from `oomdump.contract`, which the watcher checks its own
environment with.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from oomdump import contract

PREFIX = "oomdump.io/"
INJECT = PREFIX + "inject"
STATUS = PREFIX + "status"


class InvalidAnnotation(ValueError):
    """An annotation value outside what the registry allows; the message is user-facing."""

    def __init__(self, key: str, value: str, allowed: str) -> None:
        shown = value if len(value) <= 40 else value[:37] + "..."
        super().__init__(f"annotation {key}={shown!r} is invalid: {allowed}")
        self.key = key
        self.value = value
        self.allowed = allowed


@dataclass(frozen=True)
class Annotation:
    key: str
    env: str | None  # watcher variable it overrides; None for control annotations
    allowed: str  # what a user may write, as the refusal message and README say it
    meaning: str
    example: str
    normalize: Callable[[str], str]  # raises ValueError when the value is not allowed

    def validate(self, value: str) -> str:
        try:
            return self.normalize(value)
        except ValueError:
            raise InvalidAnnotation(self.key, value, self.allowed) from None


def _inject(value: str) -> str:
    if value not in ("enabled", "disabled"):
        raise ValueError(value)
    return value


REGISTRY: tuple[Annotation, ...] = (
    Annotation(
        key=INJECT,
        env=None,
        allowed="enabled or disabled",
        meaning="`disabled` (as annotation or label) leaves the pod alone",
        example="disabled",
        normalize=_inject,
    ),
    *(
        Annotation(
            key=PREFIX + key,
            env=name,
            allowed=contract.BY_NAME[name].allowed,
            meaning=contract.BY_NAME[name].meaning,
            example=example,
            normalize=contract.BY_NAME[name].normalize,
        )
        for key, name, example in (
            ("critical", "CRITICAL", "85"),
            ("cooldown", "COOLDOWN", "2m"),
            ("watch-time", "WATCH_TIME", "50ms"),
            ("ports", "PPROF_PORTS", "6060,8080"),
            ("bucket", "BUCKET", "team-heap-dumps"),
            ("prefix", "S3_PREFIX", "prod/"),
        )
    ),
)

BY_KEY: Mapping[str, Annotation] = {entry.key: entry for entry in REGISTRY}
BY_ENV: Mapping[str, Annotation] = {entry.env: entry for entry in REGISTRY if entry.env}


def env_overrides(annotations: Mapping[str, str]) -> dict[str, str]:
    """Watcher variables set by the pod's annotations; InvalidAnnotation on the first bad one.

    Unknown `oomdump.io/*` keys are ignored (the status annotation is one of them).
    """
    overrides: dict[str, str] = {}
    for entry in REGISTRY:
        if entry.key in annotations:
            value = entry.validate(annotations[entry.key])
            if entry.env:
                overrides[entry.env] = value
    return overrides


def markdown_table() -> str:
    """The README's annotation table, generated so that docs and validation cannot drift."""
    rows = [
        "| annotation | sets | allowed values | meaning | example |",
        "|---|---|---|---|---|",
    ]
    for entry in REGISTRY:
        sets = f"`{entry.env}`" if entry.env else "—"
        rows.append(
            f"| `{entry.key}` | {sets} | {entry.allowed} | {entry.meaning} | `{entry.example}` |"
        )
    return "\n".join(rows) + "\n"
