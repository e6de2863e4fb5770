"""ServingCertificate on its own: what a rotation looks like from the live SSLContext."""

import contextlib
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from tests.webhook.conftest import make_pki
from tests.webhook.pki import issue
from webhook.tls import CertificateError, ServingCertificate


def handshake_serial(server_context: ssl.SSLContext, ca_file: Path) -> int:
    """Serial the server context presents, by an in-memory TLS handshake."""
    client_context = ssl.create_default_context(cafile=str(ca_file))
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_context.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(4):  # TLS 1.3 needs two flights each way; extra rounds are no-ops
        for end in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    der = client.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_unchanged_files_are_not_reloaded(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    certificate = ServingCertificate(pki.cert_file, pki.key_file)
    assert certificate.check() is None
    assert handshake_serial(certificate.context, pki.ca_file) == pki.serial


def test_half_rotated_pair_never_reaches_the_live_context(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    certificate = ServingCertificate(pki.cert_file, pki.key_file)
    staged_cert, staged_key = tmp_path / "new.crt", tmp_path / "new.key"
    new_serial = issue(pki.ca, staged_cert, staged_key)
    pki.cert_file.write_bytes(staged_cert.read_bytes())  # cert rotated, key not yet
    assert certificate.check() is False
    assert handshake_serial(certificate.context, pki.ca_file) == pki.serial
    pki.key_file.write_bytes(staged_key.read_bytes())
    assert certificate.check() is True
    assert certificate.loaded.serial == new_serial
    assert handshake_serial(certificate.context, pki.ca_file) == new_serial


def test_missing_files_are_refused_then_picked_up(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    certificate = ServingCertificate(pki.cert_file, pki.key_file)
    pki.key_file.unlink()
    assert certificate.check() is False
    assert certificate.check() is None  # reported once, not on every check
    assert handshake_serial(certificate.context, pki.ca_file) == pki.serial
    new_serial = issue(pki.ca, pki.cert_file, pki.key_file)
    assert certificate.check() is True
    assert handshake_serial(certificate.context, pki.ca_file) == new_serial


@pytest.mark.parametrize("broken", ["cert", "key"])
def test_unusable_files_at_startup_name_the_files(tmp_path: Path, broken: str) -> None:
    pki = make_pki(tmp_path)
    (pki.cert_file if broken == "cert" else pki.key_file).write_text("not PEM")
    with pytest.raises(CertificateError, match="not a matching PEM certificate and private key"):
        ServingCertificate(pki.cert_file, pki.key_file)
