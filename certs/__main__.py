"""`python -m certs` (`oomdump-certs`): generate certificates to a folder, or keep them
in-cluster (`bootstrap`: Secret, caBundle, served files; once, or as a reconcile loop), or
check that the loop is alive (`healthcheck`, the reconciler container's liveness probe)."""

import argparse
import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from certs.validity import parse_validity
from oomdump.durations import parse_duration

# The Kubernetes client and cryptography load only for the commands that use them
# (imports inside _generate and _bootstrap): `healthcheck` runs every probe period inside
# a container limited to a tenth of a core, and importing them takes over a second there.
log = logging.getLogger("certs")

DEFAULT_NAMESPACE = "oomdump-system"
DEFAULT_SERVICE = "oomdump-webhook"
DEFAULT_SECRET = "oomdump-webhook-tls"
DEFAULT_WEBHOOK_CONFIG = "oomdump"


def _validity(text: str) -> timedelta:
    try:
        return parse_validity(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _interval(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"interval {text!r} must be longer than zero")
    return seconds


def _dns_name(text: str) -> str:
    labels = text.split(".")
    if (
        len(text) > 253
        or not all(
            label
            and len(label) <= 63
            and label[0] != "-"
            and label[-1] != "-"
            and all(c.isascii() and (c.isalnum() or c == "-") for c in label)
            for label in labels
        )
        or text != text.lower()
    ):
        raise argparse.ArgumentTypeError(f"{text!r} is not a lower-case DNS name (RFC 1123)")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oomdump-certs", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser, namespace_default: str, namespace_help: str) -> None:
        sub.add_argument(
            "--service", default=DEFAULT_SERVICE, help=f"the webhook's Service ({DEFAULT_SERVICE})"
        )
        sub.add_argument("--namespace", default=namespace_default, help=namespace_help)
        sub.add_argument(
            "--validity",
            type=_validity,
            default=parse_validity("365d"),
            help="serving certificate lifetime: days (365, 365d) or a Go duration (720h)",
        )
        sub.add_argument(
            "--ca-validity",
            type=_validity,
            default=parse_validity("3650d"),
            help="CA lifetime, at least --validity (default 3650d)",
        )

    generate = commands.add_parser("generate", help="write ca.crt, tls.crt, tls.key to --out")
    common(generate, DEFAULT_NAMESPACE, f"the Service's namespace ({DEFAULT_NAMESPACE})")
    generate.add_argument("--out", type=Path, required=True, help="folder to write into")
    generate.add_argument(
        "--dns-name",
        action="append",
        default=[],
        type=_dns_name,
        help="one more DNS name in the certificate (repeatable), e.g. localhost for a local run",
    )

    bootstrap = commands.add_parser(
        "bootstrap", help="keep the Secret, the caBundle and (with --out) the served files"
    )
    common(
        bootstrap,
        os.environ.get("POD_NAMESPACE", DEFAULT_NAMESPACE),
        f"the Service's and Secret's namespace ($POD_NAMESPACE, else {DEFAULT_NAMESPACE})",
    )
    bootstrap.add_argument(
        "--secret-name", default=DEFAULT_SECRET, help=f"in --namespace (default {DEFAULT_SECRET})"
    )
    bootstrap.add_argument(
        "--webhook-config-name",
        default=DEFAULT_WEBHOOK_CONFIG,
        help=f"the MutatingWebhookConfiguration to keep (default {DEFAULT_WEBHOOK_CONFIG})",
    )
    bootstrap.add_argument("--out", type=Path, help="also keep ca.crt, tls.crt, tls.key here")
    bootstrap.add_argument("--kubeconfig", help="default: in-cluster, else $KUBECONFIG")
    bootstrap.add_argument("--loop", action="store_true", help="reconcile until SIGTERM")
    bootstrap.add_argument(
        "--interval", type=_interval, default=30.0, help="loop period, Go duration (30s)"
    )
    bootstrap.add_argument(
        "--heartbeat-file",
        type=Path,
        help="with --loop: touched after every pass, done or failed (see healthcheck)",
    )

    health = commands.add_parser(
        "healthcheck",
        help="exit 0 when the loop's heartbeat file is fresh, 1 when stale or missing",
    )
    health.add_argument("--heartbeat-file", type=Path, required=True)
    health.add_argument("--max-age", type=_interval, required=True, help="Go duration, e.g. 3m")
    return parser


def _write_plain(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        staged = folder / f".{name}.tmp"
        staged.write_bytes(content)
        staged.chmod(0o600 if name.endswith(".key") else 0o644)
        os.replace(staged, folder / name)


def _generate(args: argparse.Namespace) -> int:
    from certs.assess import CA_CERT, TLS_CERT, TLS_KEY
    from certs.material import IssueSettings
    from certs.pki import issue_ca, issue_serving_pair, service_dns_names

    issue = IssueSettings(args.service, args.namespace, args.validity, args.ca_validity)
    names = service_dns_names(issue.service, issue.namespace)
    names += [name for name in args.dns_name if name not in names]
    now = datetime.now(UTC)
    ca = issue_ca(f"oomdump webhook CA {issue.namespace}", issue.ca_validity, now)
    pair = issue_serving_pair(ca, names, issue.validity, now)
    _write_plain(args.out, {CA_CERT: ca.cert_pem, TLS_CERT: pair.cert_pem, TLS_KEY: pair.key_pem})
    print(f"wrote {CA_CERT}, {TLS_CERT}, {TLS_KEY} to {args.out} for {', '.join(names)}")
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    from certs.bootstrap import BootstrapSettings, reconcile, run_loop
    from certs.kube import KubeCluster, api_client
    from certs.material import IssueSettings
    from certs.pki import service_dns_names

    settings = BootstrapSettings(
        IssueSettings(args.service, args.namespace, args.validity, args.ca_validity),
        args.webhook_config_name,
        args.out,
    )
    service_dns_names(args.service, args.namespace)
    cluster = KubeCluster(
        api_client(args.kubeconfig), args.namespace, args.secret_name, args.webhook_config_name
    )

    def clock() -> datetime:
        return datetime.now(UTC)

    if not args.loop:
        outcome = reconcile(cluster, settings, clock)
        print("; ".join(outcome.done) or "nothing to do: secret, caBundle and files are current")
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    heartbeat: Path | None = args.heartbeat_file

    def after_pass(timeout: float) -> bool:
        # A pass that returns, done or failed, proves the loop alive; one that hangs
        # (an API answer that never ends) leaves the file to age until the probe fails.
        if heartbeat is not None:
            _beat(heartbeat)
        return stop.wait(timeout)

    run_loop(cluster, settings, clock, args.interval, after_pass)
    return 0


def _beat(path: Path) -> None:
    try:
        path.touch()  # sets the mtime of an existing file to now
    except OSError as error:
        log.warning("heartbeat %s not written (the liveness probe will fail): %s", path, error)


def _healthcheck(args: argparse.Namespace) -> int:
    try:
        age = time.time() - args.heartbeat_file.stat().st_mtime
    except OSError as error:
        print(
            f"unhealthy: no heartbeat at {args.heartbeat_file}: {error.strerror}", file=sys.stderr
        )
        return 1
    if age > args.max_age:
        print(
            f"unhealthy: the reconcile loop's last pass ended {age:.0f}s ago"
            f" (allowed {args.max_age:.0f}s): it hangs",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "healthcheck":
        return _healthcheck(args)
    from certs.bootstrap import ReconcileError
    from certs.kube import ClusterError

    try:
        return _generate(args) if args.command == "generate" else _bootstrap(args)
    except (ValueError, ClusterError, ReconcileError, OSError) as error:
        print(f"oomdump-certs {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
