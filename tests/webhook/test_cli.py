"""Flags and their environment variables (DESIGN.md and the shared agreement)."""

import pytest

from webhook.__main__ import parse_args

REQUIRED = ["--tls-cert-file", "c.pem", "--tls-key-file", "k.pem", "--sidecar-image", "img:1"]


def test_defaults() -> None:
    args = parse_args(REQUIRED)
    assert (args.host, args.port) == ("0.0.0.0", 8443)
    assert args.sidecar_mode == "container"
    assert args.namespace == "oomdump-system"
    assert args.defaults_file is None


def test_every_flag_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "WEBHOOK_HOST": "127.0.0.1",
        "WEBHOOK_PORT": "9443",
        "TLS_CERT_FILE": "/tls/tls.crt",
        "TLS_KEY_FILE": "/tls/tls.key",
        "SIDECAR_IMAGE": "ghcr.io/oomdump/oomdump:9",
        "SIDECAR_MODE": "native",
        "POD_NAMESPACE": "platform",
        "SIDECAR_DEFAULTS_FILE": "/etc/oomdump/defaults.yaml",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 9443)
    assert (args.tls_cert_file, args.tls_key_file) == ("/tls/tls.crt", "/tls/tls.key")
    assert args.sidecar_image == "ghcr.io/oomdump/oomdump:9"
    assert args.sidecar_mode == "native"
    assert args.namespace == "platform"
    assert args.defaults_file == "/etc/oomdump/defaults.yaml"
    # A flag beats its environment variable.
    assert parse_args(["--port", "10443"]).port == 10443


def test_missing_required_settings_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--sidecar-image", "img"])
    assert exited.value.code == 2
    assert "missing --tls-cert-file, --tls-key-file" in capsys.readouterr().err


def test_invalid_mode_from_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIDECAR_MODE", "sidecar")
    with pytest.raises(SystemExit):
        parse_args(REQUIRED)
    assert "--sidecar-mode must be one of container, native" in capsys.readouterr().err


def test_non_numeric_port_from_the_environment_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEBHOOK_PORT", "https")
    with pytest.raises(SystemExit):
        parse_args(REQUIRED)
    assert "--port: invalid int value: 'https'" in capsys.readouterr().err
