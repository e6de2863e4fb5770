"""New Secret contents for a verdict: a fresh serving pair, or a fresh CA that keeps the
still-valid old CAs in the bundle so certificates they signed stay trusted meanwhile."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization

from certs.assess import CA_CERT, CA_KEY, TLS_CERT, TLS_KEY, Verdict, load_certificates
from certs.pki import IssuedCA, issue_ca, issue_serving_pair


@dataclass(frozen=True)
class IssueSettings:
    """What to issue: for which Service, and for how long."""

    service: str
    namespace: str
    validity: timedelta
    ca_validity: timedelta

    def __post_init__(self) -> None:
        if self.ca_validity < self.validity:
            raise ValueError(
                f"the CA validity ({self.ca_validity}) is shorter than the serving "
                f"certificate's ({self.validity}); give the CA at least as long"
            )


def _still_valid_cas(old_bundle: bytes | None, now: datetime) -> list[bytes]:
    if not old_bundle:
        return []
    try:
        certificates = load_certificates(old_bundle)
    except ValueError:
        return []
    return [
        cert.public_bytes(serialization.Encoding.PEM)
        for cert in certificates
        if cert.not_valid_after_utc > now
    ]


def fresh_material(
    old: dict[str, bytes] | None,
    verdict: Verdict,
    dns_names: list[str],
    settings: IssueSettings,
    now: datetime,
) -> dict[str, bytes]:
    """Secret data (ca.crt bundle, ca.key, tls.crt, tls.key) replacing `old` per `verdict`."""
    if verdict is Verdict.KEEP:
        raise ValueError("nothing to issue for a KEEP verdict")
    if verdict is Verdict.NEW_SERVING_PAIR and old is not None:
        ca = IssuedCA(
            load_certificates(old[CA_CERT])[0].public_bytes(serialization.Encoding.PEM), old[CA_KEY]
        )
        bundle = old[CA_CERT]
    else:
        ca = issue_ca(f"oomdump webhook CA {settings.namespace}", settings.ca_validity, now)
        bundle = b"".join([ca.cert_pem, *_still_valid_cas((old or {}).get(CA_CERT), now)])
    pair = issue_serving_pair(ca, dns_names, settings.validity, now)
    return {CA_CERT: bundle, CA_KEY: ca.key_pem, TLS_CERT: pair.cert_pem, TLS_KEY: pair.key_pem}
