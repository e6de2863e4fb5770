"""`python -m webhook` / `oomdump-webhook`: the HTTPS admission server (one uvicorn worker)."""

import argparse
import dataclasses
import os
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import uvicorn

from webhook import logs
from webhook.app import ServerState, create_app
from webhook.config import SIDECAR_MODES, DefaultsError, InjectConfig, load_defaults, notify_url
from webhook.notices import NoticeService
from webhook.ratelimit import RateLimiter
from webhook.reviewed import IN_CLUSTER_TOKEN
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
    parser.add_argument(
        "--service-name",
        default=_env("WEBHOOK_SERVICE_NAME", "oomdump-webhook"),
        help="the webhook's Service (in --namespace), where watchers send notices"
        " [WEBHOOK_SERVICE_NAME]",
    )
    parser.add_argument(
        "--service-port",
        type=int,
        default=_env("WEBHOOK_SERVICE_PORT", "443"),
        help="that Service's port [WEBHOOK_SERVICE_PORT]",
    )
    parser.add_argument(
        "--notify-ca-file",
        default=_env("NOTIFY_CA_FILE"),
        help="CA bundle (PEM) the served certificate is signed by, given to watchers; default:"
        " ca.crt next to --tls-cert-file [NOTIFY_CA_FILE]",
    )
    parser.add_argument(
        "--kubeconfig",
        default=_env("WEBHOOK_KUBECONFIG"),
        help="credentials for notices (TokenReview, pods get, Events); default: the pod's"
        " ServiceAccount; with neither, notices are off [WEBHOOK_KUBECONFIG]",
    )
    parser.add_argument(
        "--notice-burst",
        type=int,
        default=_env("NOTICE_BURST", "20"),
        help="notices one pod may send at once before the rate applies [NOTICE_BURST]",
    )
    parser.add_argument(
        "--notice-per-minute",
        type=float,
        default=_env("NOTICE_PER_MINUTE", "12"),
        help="notices per minute one pod may send after its burst [NOTICE_PER_MINUTE]",
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
    if not 1 <= args.service_port <= 65535:
        parser.error("--service-port must be from 1 to 65535")
    if args.notice_burst < 1 or args.notice_per_minute <= 0:
        parser.error("--notice-burst must be >= 1 and --notice-per-minute positive")
    return args


def _serve_notices(state: ServerState, args: argparse.Namespace) -> None:
    """Notices need API credentials (to verify the watcher's token and write the Event);
    without them watchers are not told to send any (the status annotation says why)."""
    if not args.kubeconfig and not IN_CLUSTER_TOKEN.exists():
        state.config = dataclasses.replace(
            state.config, notify_off="off: the webhook has no API credentials for notices"
        )
        return
    from kubernetes.config import ConfigException  # ~0.5 s: only where notices are served

    from webhook.kubeapi import NoticeApi, load_client

    try:
        api = load_client(args.kubeconfig)
    except (ConfigException, OSError) as error:
        sys.exit(f"oomdump-webhook: API credentials for notices: {error}")
    limiter = RateLimiter(args.notice_burst, args.notice_per_minute)
    state.notices = NoticeService(NoticeApi(api, socket.gethostname()), limiter, state.metrics)
    state.notify_url = notify_url(args.service_name, args.namespace, args.service_port)
    cert_file = Path(args.tls_cert_file)
    state.notify_ca_file = Path(args.notify_ca_file or cert_file.parent / "ca.crt")
    state.config = dataclasses.replace(
        state.config, notify_off=f"off: no CA bundle in {state.notify_ca_file} yet"
    )


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
    _serve_notices(state, args)

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
