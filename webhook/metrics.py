"""Prometheus metrics of the webhook, in a registry of its own (no process-global state)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "oomdump_webhook_requests",
            "Admission requests answered, by result (injected, skipped, denied, bad-request)",
            ["result"],
            registry=self.registry,
        )
        self.injections = Counter(
            "oomdump_webhook_injections",
            "Pods the watcher was injected into, by sidecar mode",
            ["mode"],
            registry=self.registry,
        )
        self.skips = Counter(
            "oomdump_webhook_skips",
            "Pods admitted without injection, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.denials = Counter(
            "oomdump_webhook_denials",
            "Pods refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.bad_requests = Counter(
            "oomdump_webhook_bad_requests",
            "Requests refused with a 4xx before any decision, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "oomdump_webhook_request_duration_seconds",
            "Time spent answering POST /mutate in the handler (body read, decision, encoding)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.notices = Counter(
            "oomdump_webhook_notices",
            "Watcher notices (POST /notice) by outcome: created, aggregated (an Event's count"
            " raised), duplicate (a repeat of a notice already counted), bad-request,"
            " unauthenticated, forbidden, rate-limited, busy, unavailable, not-configured",
            ["outcome"],
            registry=self.registry,
        )
        self.notice_latency = Histogram(
            "oomdump_webhook_notice_duration_seconds",
            "Time spent answering POST /notice (TokenReview, pod read and Event write included)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.reloads = Counter(
            "oomdump_webhook_reloads",
            "Reloads of the serving certificate or the defaults file, by file kind and result",
            ["file", "result"],
            registry=self.registry,
        )
        self.defaults_stale = Gauge(
            "oomdump_webhook_defaults_stale",
            "1 while the defaults file on disk is refused (deleted, unreadable or invalid) and"
            " the last good defaults are served; 0 otherwise",
            registry=self.registry,
        )
        self.file_check_errors = Counter(
            "oomdump_webhook_file_check_errors",
            "Unexpected errors while checking the certificate and defaults files (the check"
            " runs again at the next interval)",
            registry=self.registry,
        )
        self.cert_not_after = Gauge(
            "oomdump_webhook_certificate_not_after_seconds",
            "Expiry (Unix time) of the serving certificate in use",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
