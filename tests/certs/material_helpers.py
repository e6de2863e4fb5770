"""Real certificate material issued at chosen times, for the pure-core tests."""

from datetime import UTC, datetime, timedelta

from certs.assess import Verdict
from certs.material import IssueSettings, fresh_material
from certs.pki import service_dns_names
from certs.plan import SecretState, WebhookConfigState

START = datetime(2030, 1, 1, tzinfo=UTC)
SETTINGS = IssueSettings(
    "oomdump-webhook", "oomdump-system", timedelta(days=30), timedelta(days=300)
)
NAMES = service_dns_names(SETTINGS.service, SETTINGS.namespace)
CONFIG_NAME = "oomdump"


def issue(now: datetime = START, settings: IssueSettings = SETTINGS) -> dict[str, bytes]:
    return fresh_material(None, Verdict.NEW_CA, NAMES, settings, now)


def secret(data: dict[str, bytes], version: str = "1") -> SecretState:
    return SecretState(dict(data), version)


def config(bundle: bytes, *names: str, version: str = "7") -> WebhookConfigState:
    return WebhookConfigState({name: bundle for name in names or ("pods.oomdump.io",)}, version)
