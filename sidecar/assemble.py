"""One call assembles the watcher from its Config: what `python -m sidecar` runs, and what
the tests run, so a test of the watcher is a test of what users run.

    parts = build(config)         # detector, brake, spool, fetcher, uploader, watcher
    parts.watcher.run(stop)       # until `stop` is set
    parts.close(grace)            # detector, connections, uploads (bounded by `grace`)
"""

from collections.abc import Callable
from dataclasses import dataclass

from sidecar import log
from sidecar.brake import make_brake
from sidecar.config import Config
from sidecar.detection.factory import make_detector
from sidecar.fetch import PprofFetcher
from sidecar.metrics import Metrics
from sidecar.procs import Process
from sidecar.spool import Spool
from sidecar.upload import Uploader, make_s3_client
from sidecar.watcher import Watcher


@dataclass
class Parts:
    watcher: Watcher
    uploader: Uploader | None

    def close(self, grace: float) -> None:
        self.watcher.detector.close()
        self.watcher.fetcher.close()
        if self.uploader is not None:
            self.uploader.stop(grace)


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
    uploader: Uploader | None = None
    if config.bucket:
        endpoint = config.s3_endpoint_url
        uploader = Uploader(
            spool,
            config.bucket,
            lambda: make_s3_client(endpoint),
            config.upload_backoff_min,
            config.upload_backoff_max,
            on_result=metrics.upload_result,
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
        select=select or (lambda process: True),
        refresh_interval=config.refresh_interval,
    )
    return Parts(watcher, uploader)
