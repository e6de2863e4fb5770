"""The cert-reconciler's liveness probe: the command the manifest runs, for real, against
the heartbeat the real reconcile loop (`python -m certs bootstrap --loop`) writes."""

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from certs.__main__ import build_parser as certs_parser
from tests.deploy.conftest import container, one

REPO = Path(__file__).resolve().parents[2]
PROBE_PATH = "/run/heartbeat/reconciler"


@pytest.fixture(scope="module")
def reconciler(base) -> dict:
    spec = one(base, "Deployment", "oomdump-webhook")["spec"]["template"]["spec"]
    return container(spec, "cert-reconciler")


def probe_command(reconciler: dict, heartbeat: Path, max_age: str | None = None) -> list[str]:
    """The manifest's probe command, pointed at a test file (and optionally a shorter age)."""
    command = list(reconciler["livenessProbe"]["exec"]["command"])
    assert f"--heartbeat-file={PROBE_PATH}" in command
    command = [
        f"--heartbeat-file={heartbeat}" if a.startswith("--heartbeat-file=") else a for a in command
    ]
    if max_age is not None:
        command = [f"--max-age={max_age}" if a.startswith("--max-age=") else a for a in command]
    assert command[:2] == ["python", "-m"]
    return [sys.executable, *command[1:]]


def probe(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_the_probe_watches_the_file_the_loop_writes(base, reconciler) -> None:
    args = certs_parser().parse_args(["bootstrap", *reconciler["args"]])
    assert args.loop and str(args.heartbeat_file) == PROBE_PATH
    health = certs_parser().parse_args(reconciler["livenessProbe"]["exec"]["command"][3:])
    assert str(health.heartbeat_file) == PROBE_PATH
    # Stale means hung, not slow: longer than the loop period plus a slow pass.
    assert health.max_age >= args.interval + 90
    mounts = {m["mountPath"]: m["name"] for m in reconciler["volumeMounts"]}
    spec = one(base, "Deployment", "oomdump-webhook")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts[str(Path(PROBE_PATH).parent)]]
    assert reconciler["livenessProbe"]["timeoutSeconds"] >= 5  # a Python start on 0.1 CPU


def test_the_probe_passes_on_a_fresh_heartbeat_and_fails_on_a_stale_or_missing_one(
    reconciler, tmp_path: Path
) -> None:
    heartbeat = tmp_path / "reconciler"
    command = probe_command(reconciler, heartbeat)
    missing = probe(command)
    assert missing.returncode == 1 and "no heartbeat" in missing.stderr
    heartbeat.touch()
    assert probe(command).returncode == 0
    four_minutes_ago = time.time() - 240
    os.utime(heartbeat, (four_minutes_ago, four_minutes_ago))
    stale = probe(command)
    assert stale.returncode == 1 and "it hangs" in stale.stderr


class ApiThatHangs:
    """A loopback "API server": the first request gets a quick 500 (a failed pass), every
    later one a response that trickles a byte every 0.2 s and never ends, which the
    client's per-read timeout never catches."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.requests += 1
            threading.Thread(target=self._answer, args=(conn, self.requests), daemon=True).start()

    def _answer(self, conn: socket.socket, number: int) -> None:
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(65536)
                if number == 1:
                    conn.sendall(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                        b"Connection: close\r\n\r\n"
                    )
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not self.stop.wait(0.2):
                    conn.sendall(b"X")
            except OSError:
                return


@contextmanager
def reconcile_loop(
    tmp_path: Path, heartbeat: Path
) -> Iterator[tuple[subprocess.Popen[bytes], ApiThatHangs]]:
    api = ApiThatHangs()
    api.thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{api.port}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
"""
    )
    command = [
        sys.executable, "-m", "certs", "bootstrap", "--kubeconfig", str(kubeconfig),
        "--out", str(tmp_path / "out"), "--loop", "--interval", "1s",
        "--heartbeat-file", str(heartbeat),
    ]  # fmt: skip
    log = (tmp_path / "loop.log").open("wb")
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, api
    finally:
        process.kill()
        process.wait(timeout=30)
        log.close()
        api.stop.set()
        api.thread.join(timeout=10)
        api.listener.close()


def test_a_hung_reconcile_pass_makes_the_probe_fail(reconciler, tmp_path: Path) -> None:
    heartbeat = tmp_path / "reconciler"
    command = probe_command(reconciler, heartbeat, max_age="2s")
    with reconcile_loop(tmp_path, heartbeat) as (process, api):
        deadline = time.monotonic() + 60
        while not heartbeat.exists():  # the first pass failed fast and said so
            assert time.monotonic() < deadline, (tmp_path / "loop.log").read_text()
            assert process.poll() is None
            time.sleep(0.05)  # bounded poll
        assert probe(command).returncode == 0
        while api.requests < 2:  # the second pass is now stuck in its first request
            assert time.monotonic() < deadline
            time.sleep(0.05)
        beat = heartbeat.stat().st_mtime
        while time.time() - beat <= 2.5:
            time.sleep(0.1)  # let the heartbeat age past the probe's 2 s
        result = probe(command)
        assert result.returncode == 1 and "it hangs" in result.stderr
        assert process.poll() is None, "the loop died instead of hanging"
        assert heartbeat.stat().st_mtime == beat  # no pass ended meanwhile
