"""Judge stored certificate material: keep it, issue a new serving pair, or a new CA."""

import enum
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from certs.validity import needs_renewal

# Keys of the Secret (the kubernetes.io/tls layout, as cert-manager writes it, plus the CA key).
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"
SECRET_KEYS = (CA_CERT, CA_KEY, TLS_CERT, TLS_KEY)


class Verdict(enum.Enum):
    KEEP = "keep"
    NEW_SERVING_PAIR = "new-serving-pair"
    NEW_CA = "new-ca"


@dataclass(frozen=True)
class Assessment:
    verdict: Verdict
    reason: str


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; ValueError when there is none or one is broken."""
    certificates = x509.load_pem_x509_certificates(pem)
    if not certificates:
        raise ValueError("no certificate in the PEM data")
    return certificates


def _public_bytes(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _key_matches(cert: x509.Certificate, key_pem: bytes) -> bool:
    key = serialization.load_pem_private_key(key_pem, password=None)
    return _public_bytes(key.public_key()) == _public_bytes(cert.public_key())


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _dns_names(cert: x509.Certificate) -> set[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(sans.get_values_for_type(x509.DNSName))


def _assess_ca(data: dict[str, bytes], now: datetime) -> Assessment | x509.Certificate:
    missing = [key for key in SECRET_KEYS if not data.get(key)]
    if missing:
        return Assessment(Verdict.NEW_CA, f"the secret lacks {', '.join(missing)}")
    try:
        ca = load_certificates(data[CA_CERT])[0]
        ca_key_ok = _key_matches(ca, data[CA_KEY])
    except (ValueError, TypeError) as error:
        return Assessment(Verdict.NEW_CA, f"the stored CA is unreadable: {error}")
    if not _is_ca(ca):
        return Assessment(Verdict.NEW_CA, "the first certificate of ca.crt is not a CA")
    if not ca_key_ok:
        return Assessment(
            Verdict.NEW_CA, "ca.key does not belong to the first certificate of ca.crt"
        )
    if needs_renewal(ca.not_valid_before_utc, ca.not_valid_after_utc, now):
        return Assessment(
            Verdict.NEW_CA,
            f"the CA expires {ca.not_valid_after_utc.isoformat()}: "
            "under a third of its validity left",
        )
    return ca


def assess(data: dict[str, bytes] | None, dns_names: list[str], now: datetime) -> Assessment:
    """What the stored material (Secret data, or None when there is no Secret) needs at `now`."""
    if data is None:
        return Assessment(Verdict.NEW_CA, "no secret yet")
    ca = _assess_ca(data, now)
    if isinstance(ca, Assessment):
        return ca
    try:
        leaf = load_certificates(data[TLS_CERT])[0]
        leaf_key_ok = _key_matches(leaf, data[TLS_KEY])
    except (ValueError, TypeError) as error:
        return Assessment(Verdict.NEW_SERVING_PAIR, f"the serving pair is unreadable: {error}")
    if not leaf_key_ok:
        return Assessment(Verdict.NEW_SERVING_PAIR, "tls.key does not belong to tls.crt")
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return Assessment(Verdict.NEW_SERVING_PAIR, "tls.crt was not issued by the current CA")
    missing_names = sorted(set(dns_names) - _dns_names(leaf))
    if missing_names:
        return Assessment(
            Verdict.NEW_SERVING_PAIR, f"tls.crt does not name {', '.join(missing_names)}"
        )
    if needs_renewal(leaf.not_valid_before_utc, leaf.not_valid_after_utc, now):
        return Assessment(
            Verdict.NEW_SERVING_PAIR,
            f"tls.crt expires {leaf.not_valid_after_utc.isoformat()}: "
            "under a third of its validity left",
        )
    return Assessment(Verdict.KEEP, "valid")
