"""`python -m webhook` / `oomdump-webhook`: the HTTPS admission server (one uvicorn worker)."""

import argparse
import os
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import uvicorn

from webhook import logs
from webhook.app import ServerState, create_app
from webhook.config import SIDECAR_MODES, DefaultsError, InjectConfig, load_defaults
from webhook.tls import CertificateError, ServingCertificate


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value else default


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="oomdump-webhook",
        description="Mutating admission webhook that injects the oomdump watcher sidecar.",
        epilog="Each flag may also come from the environment variable shown in brackets.",
    )
    parser.add_argument("--host", default=_env("WEBHOOK_HOST", "0.0.0.0"), help="[WEBHOOK_HOST]")
    parser.add_argument(
        "--port", type=int, default=_env("WEBHOOK_PORT", "8443"), help="[WEBHOOK_PORT]"
    )
    parser.add_argument("--tls-cert-file", default=_env("TLS_CERT_FILE"), help="[TLS_CERT_FILE]")
    parser.add_argument("--tls-key-file", default=_env("TLS_KEY_FILE"), help="[TLS_KEY_FILE]")
    parser.add_argument("--sidecar-image", default=_env("SIDECAR_IMAGE"), help="[SIDECAR_IMAGE]")
    parser.add_argument(
        "--sidecar-mode",
        choices=SIDECAR_MODES,
        default=_env("SIDECAR_MODE", "container"),
        help="container, or native: an init container with restartPolicy Always (k8s >= 1.29)"
        " [SIDECAR_MODE]",
    )
    parser.add_argument(
        "--namespace",
        default=_env("POD_NAMESPACE", "oomdump-system"),
        help="the webhook's own namespace, never injected [POD_NAMESPACE]",
    )
    parser.add_argument(
        "--defaults-file",
        default=_env("SIDECAR_DEFAULTS_FILE"),
        help="YAML watcher defaults, re-read when it changes [SIDECAR_DEFAULTS_FILE]",
    )
    parser.add_argument(
        "--reload-interval",
        type=float,
        default=_env("RELOAD_INTERVAL", "1"),
        help="seconds between checks of the certificate and defaults files [RELOAD_INTERVAL]",
    )
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "info"), help="[LOG_LEVEL]")
    args = parser.parse_args(argv)
    missing = [
        flag
        for flag, value in (
            ("--tls-cert-file", args.tls_cert_file),
            ("--tls-key-file", args.tls_key_file),
            ("--sidecar-image", args.sidecar_image),
        )
        if not value
    ]
    if missing:
        parser.error(f"missing {', '.join(missing)} (or the environment variables)")
    if args.sidecar_mode not in SIDECAR_MODES:
        parser.error(f"--sidecar-mode must be one of {', '.join(SIDECAR_MODES)}")
    if args.reload_interval <= 0:
        parser.error("--reload-interval must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logs.configure(args.log_level.upper())
    defaults_file = Path(args.defaults_file) if args.defaults_file else None
    try:
        defaults = load_defaults(defaults_file)
        certificate = ServingCertificate(Path(args.tls_cert_file), Path(args.tls_key_file))
    except (DefaultsError, CertificateError) as error:
        sys.exit(f"oomdump-webhook: {error}")
    config = InjectConfig(
        image=args.sidecar_image,
        mode=args.sidecar_mode,
        own_namespace=args.namespace,
        defaults=defaults,
    )
    state = ServerState(
        config=config,
        certificate=certificate,
        defaults_file=defaults_file,
        reload_interval=args.reload_interval,
    )

    def live_context(_: uvicorn.Config, __: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return certificate.context

    server_config = uvicorn.Config(
        create_app(state),
        host=args.host,
        port=args.port,
        ssl_context_factory=live_context,
        access_log=False,
        log_config=None,  # uvicorn's loggers propagate to the escaping root handler
        log_level=args.log_level.lower(),
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(server_config).run()


if __name__ == "__main__":
    main()
