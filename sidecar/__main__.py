"""`python -m sidecar` / `oomdump-sidecar`: read the environment, watch, upload, stop on SIGTERM."""

import signal
import sys
import threading
from types import FrameType

from sidecar import log
from sidecar.assemble import build
from sidecar.config import ConfigError, load_config
from sidecar.metrics import Metrics

EXIT_CONFIG = 2


def main() -> int:
    try:
        config = load_config()
    except ConfigError as error:
        log.error("config-invalid", detail=str(error))
        return EXIT_CONFIG

    metrics = Metrics()
    if config.metrics_port is not None:
        try:
            metrics.serve(config.metrics_port)
        except OSError as error:
            log.error("metrics-port-unusable", port=config.metrics_port, detail=str(error))
            return EXIT_CONFIG
        log.info("metrics-serving", port=config.metrics_port)

    try:
        parts = build(config, metrics)
    except ValueError as error:
        log.error("config-invalid", detail=str(error))
        return EXIT_CONFIG
    except OSError as error:
        log.error("dump-dir-unusable", dump_dir=config.dump_dir, detail=str(error))
        return EXIT_CONFIG

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal", name=signal.Signals(signum).name, action="stopping")
        stop.set()
        parts.watcher.detector.wake()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        parts.watcher.run(stop)
    finally:
        parts.close(config.shutdown_grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
