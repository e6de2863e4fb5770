"""The serving certificate, reloaded into the live SSLContext when its files change.

uvicorn keeps the SSLContext it was given for the server's lifetime, and every new
connection copies the context's certificate at handshake time. So loading a new chain
into that same context (on the event loop, between handshakes) rotates the certificate
without a restart; connections already open keep theirs.

A half-written or mismatched pair (cert replaced, key not yet) must never reach the live
context, where a failed `load_cert_chain` could leave a new certificate with the old key.
So each candidate pair is snapshotted to a private directory, tried on a scratch context,
and only then loaded into the live one.
"""

import logging
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

log = logging.getLogger("webhook.tls")


class CertificateError(ValueError):
    """The certificate/key pair cannot be served; the message names the files and why."""


@dataclass(frozen=True)
class Loaded:
    subject: str
    serial: int
    not_after: float  # Unix time


class ServingCertificate:
    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.set_alpn_protocols(["http/1.1"])
        pair = self._read()
        self.loaded = self._load(pair)
        self._seen: tuple[bytes, bytes] | str = pair

    def check(self) -> bool | None:
        """Reload when the files' contents changed: True reloaded, False refused, None same.

        A refused pair (or unreadable file) is reported once and retried when the files
        change again; the previous certificate keeps serving meanwhile.
        """
        try:
            pair: tuple[bytes, bytes] | str = self._read()
        except CertificateError as error:
            pair = str(error)
        if pair == self._seen:
            return None
        self._seen = pair
        if isinstance(pair, str):
            log.warning("serving certificate not reloaded: %s", pair)
            return False
        try:
            self.loaded = self._load(pair)
        except CertificateError as error:
            log.warning("serving certificate not reloaded, keeping the old one: %s", error)
            return False
        log.info(
            "serving certificate reloaded: %s serial %x", self.loaded.subject, self.loaded.serial
        )
        return True

    def _read(self) -> tuple[bytes, bytes]:
        try:
            return self.cert_file.read_bytes(), self.key_file.read_bytes()
        except OSError as error:
            raise CertificateError(f"cannot read {error.filename}: {error.strerror}") from None

    def _load(self, pair: tuple[bytes, bytes]) -> Loaded:
        # load_cert_chain reads paths only, so the snapshot lives in a private temporary
        # directory for the duration of the load (mode 0700; gone even if we are killed
        # right after, since nothing outlives this call).
        with tempfile.TemporaryDirectory(prefix="oomdump-webhook-tls-") as scratch:
            cert_copy, key_copy = Path(scratch) / "tls.crt", Path(scratch) / "tls.key"
            cert_copy.write_bytes(pair[0])
            key_copy.touch(mode=0o600)
            key_copy.write_bytes(pair[1])
            try:
                certificate = x509.load_pem_x509_certificate(pair[0])
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_copy, key_copy)
            except (ValueError, ssl.SSLError) as error:
                raise CertificateError(
                    f"{self.cert_file} + {self.key_file} are not a matching PEM certificate"
                    f" and private key: {error}"
                ) from None
            self.context.load_cert_chain(cert_copy, key_copy)
        return Loaded(
            subject=certificate.subject.rfc4514_string(),
            serial=certificate.serial_number,
            not_after=certificate.not_valid_after_utc.timestamp(),
        )
