"""`make bench-webhook`: throughput and latency of one uvicorn worker serving POST /mutate.

Starts `python -m webhook` over TLS (throwaway CA), then drives it from separate
load-generator processes (load.py) with a realistic ~15 KB Pod AdmissionReview:
  1. max requests/s: closed loop, keep-alive connections, for --duration seconds;
  2. p50/p99 latency at a fixed light load (--rps, default 200 req/s), open loop, and the
     same for GET /healthz: the floor this machine gives any request right now.
Targets on the 2-core reference machine: >= 800 req/s, p99 <= 10 ms at 200 req/s.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from pod import review_body  # noqa: E402

from tests.webhook.pki import create_ca, issue  # noqa: E402
from tests.webhook.server import run_webhook  # noqa: E402


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def load(mode: str, port: int, ca: Path, body: Path, *extra: str) -> dict:
    command = [
        sys.executable, str(HERE / "load.py"), mode, "--port", str(port),
        "--ca-file", str(ca), "--body-file", str(body), *extra,
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if finished.returncode != 0:
        raise SystemExit(f"load generator failed:\n{finished.stderr}")
    return json.loads(finished.stdout)


def load_parallel(processes: int, port: int, ca: Path, body: Path, *extra: str) -> list[dict]:
    command_base = [sys.executable, str(HERE / "load.py")]
    running = [
        subprocess.Popen(
            [
                *command_base,
                "max",
                "--port",
                str(port),
                "--ca-file",
                str(ca),
                "--body-file",
                str(body),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    results = []
    for process in running:
        out, err = process.communicate(timeout=600)
        if process.returncode != 0:
            raise SystemExit(f"load generator failed:\n{err}")
        results.append(json.loads(out))
    return results


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (from /proc, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--rps", type=float, default=200.0, help="fixed rate for latency")
    parser.add_argument("--connections", type=int, default=8, help="per load process")
    parser.add_argument("--load-processes", type=int, default=1)
    parser.add_argument("--log-level", default="info", help="the webhook's --log-level")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="oomdump-bench-") as scratch:
        folder = Path(scratch)
        ca = create_ca(folder, "oomdump bench CA")
        ca_file, cert_file, key_file = ca.cert_path, folder / "tls.crt", folder / "tls.key"
        issue(ca, cert_file, key_file)
        body = folder / "review.json"
        body.write_bytes(review_body())
        print(f"pod AdmissionReview: {len(body.read_bytes()) / 1024:.1f} KiB")
        with run_webhook(
            folder, cert_file, key_file, ca_file, "--log-level", args.log_level
        ) as webhook:
            port = webhook.port
            load("max", port, ca_file, body, "--duration", "2", "--connections", "2")  # warm-up
            cpu_before = cpu_seconds(webhook.process.pid)
            results = load_parallel(
                args.load_processes, port, ca_file, body,
                "--duration", str(args.duration), "--connections", str(args.connections),
            )  # fmt: skip
            total = sum(r["requests"] for r in results)
            seconds = max(r["seconds"] for r in results)
            closed = [x for r in results for x in r["latencies"]]
            cpu_per_request = (cpu_seconds(webhook.process.pid) - cpu_before) / total
            print(
                f"max throughput: {total / seconds:.0f} req/s "
                f"({args.load_processes} load process(es) x {args.connections} keep-alive "
                f"connections, {seconds:.1f} s; latency under saturation "
                f"p50 {percentile(closed, 0.5) * 1e3:.1f} ms)"
            )
            print(
                f"server CPU per request: {cpu_per_request * 1e3:.2f} ms "
                f"(= {1 / cpu_per_request:.0f} req/s if the worker had a core to itself)"
            )
            empty = folder / "empty.json"
            empty.write_bytes(b"")
            for label, request_body in (("POST /mutate", body), ("GET /healthz (floor)", empty)):
                fixed = load(
                    "rate", port, ca_file, request_body,
                    "--rps", str(args.rps), "--duration", str(args.duration),
                    "--connections", "16",
                )  # fmt: skip
                latencies = fixed["latencies"]
                print(
                    f"{label} at {args.rps:.0f} req/s ({fixed['requests']} requests, achieved "
                    f"{fixed['requests'] / fixed['seconds']:.0f} req/s): "
                    f"p50 {percentile(latencies, 0.5) * 1e3:.2f} ms, "
                    f"p99 {percentile(latencies, 0.99) * 1e3:.2f} ms, "
                    f"max {max(latencies) * 1e3:.2f} ms"
                )
            if webhook.process.poll() is not None:
                raise SystemExit("the webhook died during the benchmark")
    print("targets: >= 800 req/s for one worker; p99 <= 10 ms at 200 req/s")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
