"""`python -m certs generate` output, checked by real TLS handshakes on loopback."""

import ssl
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs.__main__ import main
from tests.certs.tls_probe import GREETING, handshake, tls_server

SANS = [
    "oomdump-webhook",
    "oomdump-webhook.oomdump-system",
    "oomdump-webhook.oomdump-system.svc",
    "oomdump-webhook.oomdump-system.svc.cluster.local",
]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    code = main(
        [
            "generate",
            "--service",
            "oomdump-webhook",
            "--namespace",
            "oomdump-system",
            "--out",
            str(out),
            "--validity",
            "30d",
        ]
    )
    assert code == 0
    return out


@pytest.mark.parametrize("name", SANS)
def test_handshake_verifies_every_san(generated: Path, name: str) -> None:
    with tls_server(generated / "tls.crt", generated / "tls.key") as port:
        assert handshake(port, generated / "ca.crt", name) == GREETING


@pytest.mark.parametrize("name", ["oomdump-webhook.default.svc", "localhost", "evil.example"])
def test_handshake_refuses_a_name_not_in_the_certificate(generated: Path, name: str) -> None:
    with (
        tls_server(generated / "tls.crt", generated / "tls.key") as port,
        pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"),
    ):
        handshake(port, generated / "ca.crt", name)


def test_handshake_refuses_another_ca(generated: Path, tmp_path: Path) -> None:
    assert main(["generate", "--out", str(tmp_path)]) == 0
    with (
        tls_server(generated / "tls.crt", generated / "tls.key") as port,
        pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"),
    ):
        handshake(port, tmp_path / "ca.crt", SANS[-1])


def test_extra_dns_names_are_served_too(tmp_path: Path) -> None:
    assert main(["generate", "--out", str(tmp_path), "--dns-name", "localhost"]) == 0
    with tls_server(tmp_path / "tls.crt", tmp_path / "tls.key") as port:
        assert handshake(port, tmp_path / "ca.crt", "localhost") == GREETING
        assert handshake(port, tmp_path / "ca.crt", SANS[2]) == GREETING


def test_certificates_are_a_real_ca_and_a_p256_server_leaf(generated: Path) -> None:
    ca = x509.load_pem_x509_certificate((generated / "ca.crt").read_bytes())
    leaf = x509.load_pem_x509_certificate((generated / "tls.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == SANS
    public = leaf.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    leaf.verify_directly_issued_by(ca)
    lifetime = leaf.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=29) < lifetime <= timedelta(days=30)
    assert (generated / "tls.key").stat().st_mode & 0o077 == 0


def test_module_entry_point_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "certs",
            "generate",
            "--service",
            "hook",
            "--namespace",
            "ns",
            "--out",
            str(tmp_path),
            "--validity",
            "12h",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "hook.ns.svc.cluster.local" in result.stdout
    with tls_server(tmp_path / "tls.crt", tmp_path / "tls.key") as port:
        assert handshake(port, tmp_path / "ca.crt", "hook.ns.svc") == GREETING


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--validity", "soon"], "neither a number of days"),
        (["--validity", "0d"], "longer than zero"),
        (["--validity", "400d", "--ca-validity", "300d"], "CA validity"),
        (["--service", "Bad_Name"], "not a DNS-1123 label"),
        (["--namespace", ""], "not a DNS-1123 label"),
        (["--dns-name", "Local_Host"], "not a lower-case DNS name"),
        (["--dns-name=bad-.example"], "not a lower-case DNS name"),
    ],
)
def test_bad_input_is_refused_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    try:
        code = main(["generate", "--out", str(tmp_path), *args])
    except SystemExit as exit_:  # argparse refuses malformed flag values itself
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "tls.crt").exists()
