"""`python -m sidecar` / `oomdump-sidecar`: read the environment, watch, upload, stop on SIGTERM."""

import signal
import sys
import threading
from types import FrameType

from sidecar import detect, log
from sidecar.config import ConfigError, load_config
from sidecar.fetch import PprofFetcher
from sidecar.metrics import Metrics
from sidecar.spool import Spool
from sidecar.upload import Uploader, make_s3_client
from sidecar.watcher import Watcher

EXIT_CONFIG = 2


def main() -> int:
    try:
        config = load_config()
        detector = detect.make_detector(config.detect_mode, config.watch_time, config.memory_metric)
        brake = detect.make_brake(config.emergency_brake)
    except (ConfigError, ValueError) as error:
        log.error("config-invalid", detail=str(error))
        return EXIT_CONFIG

    spool = Spool(config.dump_dir, config.spool_max_files, config.spool_max_bytes)
    try:
        for path in spool.prepare():
            log.info("spool-temp-removed", path=path, reason="left half-written by an earlier run")
    except OSError as error:
        log.error("dump-dir-unusable", dump_dir=config.dump_dir, detail=str(error))
        return EXIT_CONFIG

    metrics = Metrics()
    if config.metrics_port is not None:
        try:
            metrics.serve(config.metrics_port)
        except OSError as error:
            log.error("metrics-port-unusable", port=config.metrics_port, detail=str(error))
            return EXIT_CONFIG
        log.info("metrics-serving", port=config.metrics_port)

    uploader: Uploader | None = None
    if config.bucket:
        endpoint = config.s3_endpoint_url
        uploader = Uploader(
            spool, config.bucket, lambda: make_s3_client(endpoint), on_result=metrics.upload_result
        )
        uploader.start()
        log.info("upload-enabled", bucket=config.bucket, endpoint=endpoint or "aws")
    else:
        log.info(
            "upload-disabled",
            reason="BUCKET unset: dumps stay in DUMP_DIR",
            dump_dir=config.dump_dir,
        )

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal", name=signal.Signals(signum).name, action="stopping")
        stop.set()
        detector.wake()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    fetcher = PprofFetcher(config.pprof_path, config.fetch_timeout, config.pprof_max_bytes)
    watcher = Watcher(
        config,
        detector,
        brake,
        spool,
        fetcher,
        metrics,
        on_dump=uploader.submit if uploader else lambda dump: None,
        refresh_interval=config.refresh_interval,
    )
    try:
        watcher.run(stop)
    finally:
        detector.close()
        fetcher.close()
        if uploader is not None:
            uploader.stop(config.shutdown_grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
