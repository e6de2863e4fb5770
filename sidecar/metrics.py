"""The watcher's Prometheus metrics (served only when METRICS_PORT is set)."""

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.watched = Gauge(
            "oomdump_watched_processes", "Processes watched now", registry=self.registry
        )
        self.unwatched = Gauge(
            "oomdump_unwatched_processes",
            "Processes seen but not watched, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.captures = Counter(
            "oomdump_captures_total",
            "Heap profiles saved to the spool, by fetch kind (first, gc)",
            ["kind"],
            registry=self.registry,
        )
        self.failures = Counter(
            "oomdump_capture_failures_total",
            "Fetches or captures that saved nothing, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.missed = Counter(
            "oomdump_missed_total",
            "Processes gone over their threshold (or OOM-killed) with no profile saved, by "
            "reason (no-port-yet, killed-during-capture, fetch-failed, killed-before-capture, "
            "in-cooldown)",
            ["reason"],
            registry=self.registry,
        )
        self.crossing_to_dump = Histogram(
            "oomdump_crossing_to_dump_seconds",
            "From the sample that found the process over the threshold to its profile on disk",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.uploads = Counter(
            "oomdump_uploads_total",
            "Upload attempts, by outcome and reason",
            ["outcome", "reason"],
            registry=self.registry,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> Callable[[], None]:
        """Serve /metrics on `port`; returns the function that stops serving."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5)

        return stop

    def upload_result(self, outcome: str, reason: str) -> None:
        self.uploads.labels(outcome, reason).inc()
