"""Start the real webhook (`python -m webhook`) as a subprocess on a free loopback port."""

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RunningWebhook:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    ca_file: Path

    def client(self, **kwargs: object) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.Client(base_url=self.url, verify=context, timeout=10, **kwargs)  # type: ignore[arg-type]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(webhook: RunningWebhook, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    context = ssl.create_default_context(cafile=str(webhook.ca_file))
    while time.monotonic() < deadline:
        if webhook.process.poll() is not None:
            raise RuntimeError(
                f"webhook exited {webhook.process.returncode}:\n{webhook.log_text()}"
            )
        try:
            response = httpx.get(webhook.url + "/readyz", verify=context, timeout=2)
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling interval while waiting for the condition, not a stand-in
    raise RuntimeError(f"webhook not ready within {deadline_s}s:\n{webhook.log_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextmanager
def run_webhook(
    workdir: Path,
    cert_file: Path,
    key_file: Path,
    ca_file: Path,
    *extra: str,
    image: str = "ghcr.io/oomdump/oomdump:test",
    env: dict[str, str] | None = None,
) -> Iterator[RunningWebhook]:
    port = free_port()
    log = workdir / f"webhook-{port}.log"
    command = [
        sys.executable, "-m", "webhook",
        "--host", "127.0.0.1", "--port", str(port),
        "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file),
        "--sidecar-image", image, *extra,
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    try:
        webhook = RunningWebhook(f"https://127.0.0.1:{port}", port, process, log, ca_file)
        wait_ready(webhook)
        yield webhook
    finally:
        stop(process)
