"""Drive the pure plan against a cluster: observe, apply the first action, observe again."""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from certs.files import read_files, write_files
from certs.kube import Conflict
from certs.material import IssueSettings, fresh_material
from certs.pki import service_dns_names
from certs.plan import (
    SERVED_FILES,
    Action,
    CreateSecret,
    Observed,
    RenewSecret,
    SecretState,
    SetCABundle,
    Verdict,
    WebhookConfigState,
    WriteFiles,
    plan,
)

log = logging.getLogger("oomdump.certs")

# Create, renew, patch, write, plus a few conflict re-reads: far more means a fight.
MAX_STEPS = 12


class Cluster(Protocol):
    def read_secret(self) -> SecretState | None: ...
    def create_secret(self, data: dict[str, bytes]) -> None: ...
    def update_secret(self, data: dict[str, bytes], resource_version: str) -> None: ...
    def read_webhook_config(self) -> WebhookConfigState | None: ...
    def set_ca_bundle(
        self, bundle: bytes, webhooks: tuple[str, ...], resource_version: str
    ) -> None: ...


class ReconcileError(RuntimeError):
    """The cluster did not settle: another writer keeps changing the same objects."""


@dataclass(frozen=True)
class BootstrapSettings:
    issue: IssueSettings
    webhook_config_name: str
    out_dir: Path | None = None


@dataclass
class Outcome:
    """What one reconcile did (`done`, one line per action) and what it waits for."""

    done: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    conflicts: int = 0


def describe(action: Action) -> str:
    match action:
        case CreateSecret(reason=reason):
            return f"created the secret ({reason})"
        case RenewSecret(verdict=verdict, reason=reason):
            what = (
                "a new CA and serving pair" if verdict is Verdict.NEW_CA else "a new serving pair"
            )
            return f"stored {what} ({reason})"
        case SetCABundle(webhooks=webhooks, reason=reason):
            return f"set caBundle of {', '.join(webhooks)} ({reason})"
        case WriteFiles(reason=reason):
            return f"wrote the served files ({reason})"
    raise TypeError(f"unknown action {action!r}")


def _apply(
    action: Action, cluster: Cluster, settings: BootstrapSettings, names: list[str], now: datetime
) -> None:
    match action:
        case CreateSecret():
            cluster.create_secret(fresh_material(None, Verdict.NEW_CA, names, settings.issue, now))
        case RenewSecret(verdict=verdict, old=old, resource_version=version):
            cluster.update_secret(fresh_material(old, verdict, names, settings.issue, now), version)
        case SetCABundle(bundle=bundle, webhooks=webhooks, resource_version=version):
            cluster.set_ca_bundle(bundle, webhooks, version)
        case WriteFiles(files=files):
            if settings.out_dir is None:
                raise ValueError("a WriteFiles action without --out")
            write_files(settings.out_dir, files)


def reconcile(
    cluster: Cluster, settings: BootstrapSettings, clock: Callable[[], datetime]
) -> Outcome:
    """Bring Secret, caBundle and served files in line; idempotent (a second call does
    nothing). A conflict (another replica got there first) means observe again."""
    names = service_dns_names(settings.issue.service, settings.issue.namespace)
    outcome = Outcome()
    for _ in range(MAX_STEPS):
        files = read_files(settings.out_dir, SERVED_FILES) if settings.out_dir else None
        observed = Observed(cluster.read_secret(), cluster.read_webhook_config(), files)
        now = clock()
        next_steps = plan(observed, names, settings.webhook_config_name, now)
        if not next_steps.actions:
            outcome.waiting = next_steps.waiting
            for reason in next_steps.waiting:
                log.warning("waiting: %s", reason)
            return outcome
        action = next_steps.actions[0]
        try:
            _apply(action, cluster, settings, names, now)
        except Conflict as conflict:
            outcome.conflicts += 1
            log.info("conflict, reading again: %s", conflict)
            continue
        outcome.done.append(describe(action))
        log.info("%s", outcome.done[-1])
    raise ReconcileError(
        f"no steady state after {MAX_STEPS} steps ({outcome.conflicts} conflicts; done: "
        f"{'; '.join(outcome.done) or 'nothing'}): another writer keeps changing the secret "
        "or the webhook configuration"
    )


def run_loop(
    cluster: Cluster,
    settings: BootstrapSettings,
    clock: Callable[[], datetime],
    interval: float,
    should_stop: Callable[[float], bool],
) -> None:
    """Reconcile every `interval` seconds until `should_stop(timeout)` (which waits up to
    `timeout`) says so. A failed round is logged and retried: the webhook keeps serving."""
    while True:
        try:
            reconcile(cluster, settings, clock)
        except Exception:
            log.exception("reconcile failed; retrying in %.0fs", interval)
        if should_stop(interval):
            return
