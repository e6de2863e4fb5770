"""The pure core of `bootstrap`: from what is observed (Secret, webhook configuration, the
files served) and the time, the next actions and why. No I/O here."""

from dataclasses import dataclass, field
from datetime import datetime

from certs.assess import CA_CERT, TLS_CERT, TLS_KEY, Verdict, assess

SERVED_FILES = (CA_CERT, TLS_CERT, TLS_KEY)


@dataclass(frozen=True)
class SecretState:
    data: dict[str, bytes]
    resource_version: str


@dataclass(frozen=True)
class WebhookConfigState:
    """caBundle (decoded PEM, b"" when unset) of each webhook, by webhook name."""

    ca_bundles: dict[str, bytes]
    resource_version: str


@dataclass(frozen=True)
class Observed:
    secret: SecretState | None
    webhook_config: WebhookConfigState | None
    files: dict[str, bytes | None] | None = None  # None: no --out folder to keep


@dataclass(frozen=True)
class CreateSecret:
    reason: str


@dataclass(frozen=True)
class RenewSecret:
    verdict: Verdict
    old: dict[str, bytes]
    resource_version: str
    reason: str


@dataclass(frozen=True)
class SetCABundle:
    bundle: bytes
    webhooks: tuple[str, ...]
    resource_version: str
    reason: str


@dataclass(frozen=True)
class WriteFiles:
    files: dict[str, bytes]
    reason: str


Action = CreateSecret | RenewSecret | SetCABundle | WriteFiles


@dataclass(frozen=True)
class Plan:
    actions: list[Action] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


def plan(observed: Observed, dns_names: list[str], webhook_config_name: str, now: datetime) -> Plan:
    """The actions that bring the cluster to: one valid Secret, every caBundle equal to its
    CA bundle, and the served files equal to its pair, in that order.

    When the Secret must change, that is the only action: what follows depends on the
    material it will hold, so the caller applies it, observes again and plans again.
    Files are written only after the caBundle trusts their CA, so the API server never
    meets a serving certificate it cannot verify.
    """
    secret = observed.secret
    verdict = assess(secret.data if secret else None, dns_names, now)
    if secret is None:
        return Plan([CreateSecret(verdict.reason)])
    if verdict.verdict is not Verdict.KEEP:
        return Plan(
            [RenewSecret(verdict.verdict, secret.data, secret.resource_version, verdict.reason)]
        )

    actions: list[Action] = []
    waiting: list[str] = []
    bundle = secret.data[CA_CERT]
    config = observed.webhook_config
    if config is None:
        waiting.append(f"MutatingWebhookConfiguration {webhook_config_name} does not exist yet")
    elif not config.ca_bundles:
        waiting.append(f"MutatingWebhookConfiguration {webhook_config_name} has no webhooks")
    else:
        drifted = tuple(sorted(name for name, ca in config.ca_bundles.items() if ca != bundle))
        if drifted:
            unset = all(not config.ca_bundles[name] for name in drifted)
            actions.append(
                SetCABundle(
                    bundle,
                    drifted,
                    config.resource_version,
                    "caBundle unset" if unset else "caBundle differs from the secret's CA",
                )
            )
    if observed.files is not None:
        wanted = {name: secret.data[name] for name in SERVED_FILES}
        stale = sorted(name for name in SERVED_FILES if observed.files.get(name) != wanted[name])
        if stale:
            actions.append(WriteFiles(wanted, f"{', '.join(stale)} differ from the secret"))
    return Plan(actions, waiting)
