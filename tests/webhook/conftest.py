"""Fixtures for the webhook tests: a throwaway CA and a running webhook over real TLS."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.webhook.pki import CertificateAuthority, create_ca, issue
from tests.webhook.server import RunningWebhook, run_webhook


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    ca_file: Path
    cert_file: Path
    key_file: Path
    serial: int


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca = create_ca(folder, "oomdump webhook test CA")
    ca_file = ca.cert_path
    cert_file, key_file = folder / "tls.crt", folder / "tls.key"
    serial = issue(ca, cert_file, key_file)
    return Pki(ca, ca_file, cert_file, key_file, serial)


@pytest.fixture(scope="module")
def module_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory, module_pki: Pki) -> Iterator[RunningWebhook]:
    workdir = tmp_path_factory.mktemp("webhook")
    with run_webhook(workdir, module_pki.cert_file, module_pki.key_file, module_pki.ca_file) as w:
        yield w
