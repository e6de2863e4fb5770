"""One call assembles the watcher from its Config: what `python -m sidecar` runs, and what
the tests run, so a test of the watcher is a test of what users run.

    parts = build(config)         # detector, brake, spool, fetcher, uploader, watcher
    parts.watcher.run(stop)       # until `stop` is set
    parts.close(grace)            # detector, connections, uploads (bounded by `grace`)
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sidecar import log
from sidecar.brake import make_brake
from sidecar.config import Config
from sidecar.detection.factory import make_detector
from sidecar.fetch import PprofFetcher
from sidecar.metrics import Metrics
from sidecar.notify import CAPTURED, FAILED, Notice, Notifier
from sidecar.procs import Process
from sidecar.spool import Spool
from sidecar.upload import Uploader, make_s3_client
from sidecar.watcher import Watcher


@dataclass
class Parts:
    watcher: Watcher
    uploader: Uploader | None
    notifier: Notifier | None = None

    def close(self, grace: float) -> None:
        self.watcher.detector.close()
        self.watcher.fetcher.close()
        if self.uploader is not None:
            self.uploader.stop(grace)
        if self.notifier is not None:
            self.notifier.stop(min(grace, 5.0))


def _nobody(notice: Notice) -> None:
    """Notices go nowhere when NOTIFY_URL is unset (outside Kubernetes, or no CA)."""


def stored_notice(metadata: dict[str, Any], reason: str, location: str, detail: str) -> Notice:
    """A notice about a dump, from the metadata saved with it (for the uploader's news)."""
    top = metadata.get("top")
    return Notice(
        reason,
        int(metadata.get("pid") or 0),
        str(metadata.get("comm", "")),
        str(metadata.get("cgroup", "")),
        int(metadata.get("usage") or 0),
        int(metadata.get("limit") or 0),
        metadata.get("percent"),
        location,
        detail,
        tuple(top) if isinstance(top, list) else (),
    )


def build(
    config: Config,
    metrics: Metrics | None = None,
    select: Callable[[Process], bool] | None = None,
) -> Parts:
    """The watcher for `config`, its uploader started when BUCKET is set. ValueError for a
    setting the detector refuses; OSError when DUMP_DIR is unusable. `select` narrows the
    processes watched (tests running on a host, not in a pod)."""
    detector = make_detector(config.detect_mode, config.watch_time, config.memory_metric)
    brake = make_brake(config.emergency_brake)
    spool = Spool(config.dump_dir, config.spool_max_files, config.spool_max_bytes)
    for path in spool.prepare():
        log.info("spool-temp-removed", path=path, reason="left half-written by an earlier run")
    metrics = metrics or Metrics()
    notifier: Notifier | None = None
    if config.notify_url:
        notifier = Notifier(
            config.notify_url,
            config.notify_token_file,
            config.notify_ca,
            config.pod_name,
            config.pod_namespace,
        )
        log.info("notify-enabled", url=config.notify_url)
    tell: Callable[[Notice], None] = notifier.send if notifier else _nobody
    uploader: Uploader | None = None
    if config.bucket:
        endpoint = config.s3_endpoint_url
        bucket = config.bucket
        uploader = Uploader(
            spool,
            bucket,
            lambda: make_s3_client(endpoint),
            config.upload_backoff_min,
            config.upload_backoff_max,
            on_result=metrics.upload_result,
            on_uploaded=lambda dump, metadata: tell(
                stored_notice(metadata, CAPTURED, f"s3://{bucket}/{dump.key}", "")
            ),
            on_first_failure=lambda dump, metadata, reason: tell(
                stored_notice(
                    metadata,
                    FAILED,
                    str(dump.profile_path),
                    f"upload-failed: {reason}; kept in DUMP_DIR, retried",
                )
            ),
        )
        uploader.start()
        log.info("upload-enabled", bucket=config.bucket, endpoint=endpoint or "aws")
    else:
        log.info(
            "upload-disabled",
            reason="BUCKET unset: dumps stay in DUMP_DIR",
            dump_dir=config.dump_dir,
        )
    watcher = Watcher(
        config,
        detector,
        brake,
        spool,
        PprofFetcher(config.pprof_path, config.fetch_timeout, config.pprof_max_bytes),
        metrics,
        on_dump=uploader.submit if uploader else lambda dump: None,
        notify=tell,
        select=select or (lambda process: True),
        refresh_interval=config.refresh_interval,
    )
    return Parts(watcher, uploader, notifier)
