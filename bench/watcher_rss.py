"""Idle resident memory of the watcher: `python -m sidecar` with a bucket configured, nothing
to upload, an empty PROC_ROOT and a temporary DUMP_DIR, with and without METRICS_PORT.

    .venv/bin/python bench/watcher_rss.py [--runs 3] [--settle 2]

Each run starts a fresh watcher, waits for its `event=watch-start` line, lets it settle and
reads VmRSS and VmHWM from /proc/<pid>/status; with METRICS_PORT it then scrapes /metrics
once (as Prometheus would) and reads them again. `ssl` tells whether OpenSSL is mapped
into the watcher (it should not be until the first upload loads boto3). The target
(issue 11) is VmRSS <= 25 MiB.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_MIB = 25.0


def status_kib(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as status:
        fields = (line.split() for line in status)
        return {f[0].rstrip(":"): int(f[1]) for f in fields if f[0] in ("VmRSS:", "VmHWM:")}


def ssl_mapped(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as maps:
        return any("libssl" in line or "_ssl." in line for line in maps)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float) -> None:
    found = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if needle in line:
                found.set()  # keep reading so the watcher never blocks on a full pipe

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(timeout):
        raise RuntimeError(f"the watcher did not log {needle!r} within {timeout:g}s")


def one_run(metrics: bool, settle: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="oomdump-rss-") as tmp:
        (Path(tmp) / "proc").mkdir()
        port = free_port()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPO),
            "BUCKET": "oomdump-bench",
            "S3_ENDPOINT_URL": "http://127.0.0.1:9",  # never contacted: nothing to upload
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
            "PROC_ROOT": str(Path(tmp) / "proc"),
            "DUMP_DIR": str(Path(tmp) / "spool"),
            **({"METRICS_PORT": str(port)} if metrics else {}),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "sidecar"],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            wait_for_line(process, "event=watch-start", 30)
            time.sleep(settle)  # the figure wanted is the idle one, after start-up settles
            idle = status_kib(process.pid)
            row = {
                "rss": idle["VmRSS"] / 1024,
                "hwm": idle["VmHWM"] / 1024,
                "ssl": float(ssl_mapped(process.pid)),
            }
            if metrics:
                url = f"http://127.0.0.1:{port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as answer:
                    answer.read()
                scraped = status_kib(process.pid)
                row["rss_scraped"] = scraped["VmRSS"] / 1024
                row["hwm_scraped"] = scraped["VmHWM"] / 1024
            return row
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            if process.stderr is not None:
                process.stderr.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=2.0)
    args = parser.parse_args()
    print(f"{'case':<22} {'VmRSS MiB':>10} {'VmHWM MiB':>10} {'after scrape':>13} {'ssl':>4}")
    worst = 0.0
    for metrics in (False, True):
        rows = [one_run(metrics, args.settle) for _ in range(args.runs)]
        rss = statistics.median(r["rss"] for r in rows)
        hwm = statistics.median(r["hwm"] for r in rows)
        worst = max([worst, *(r["rss"] for r in rows), *(r.get("rss_scraped", 0) for r in rows)])
        scraped = (
            f"{statistics.median(r['rss_scraped'] for r in rows):.1f}/"
            f"{statistics.median(r['hwm_scraped'] for r in rows):.1f}"
            if metrics
            else "-"
        )
        ssl = "yes" if any(r["ssl"] for r in rows) else "no"
        case = "METRICS_PORT set" if metrics else "no METRICS_PORT"
        print(f"{case:<22} {rss:>10.1f} {hwm:>10.1f} {scraped:>13} {ssl:>4}")
    verdict = "within" if worst <= TARGET_MIB else "OVER"
    print(f"worst VmRSS {worst:.1f} MiB: {verdict} the {TARGET_MIB:g} MiB target")
    return 0 if worst <= TARGET_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
