"""Serving pairs for the webhook tests, signed by the test PKI of `testinfra.pki`."""

from pathlib import Path

from testinfra.pki import CertificateAuthority, KeyPair, create_ca

__all__ = ["CertificateAuthority", "create_ca", "issue"]


def issue(
    ca: CertificateAuthority, cert_file: Path, key_file: Path, common_name: str = "webhook"
) -> int:
    """Write a serving pair for localhost/127.0.0.1 signed by `ca`; returns its serial."""
    return ca.issue_to(
        KeyPair(cert_file, key_file),
        common_name,
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1",),
        server=True,
    )
