"""SIGTERM to the real server with admissions in flight: they are answered, new connections
are refused, and the process exits within its grace period (uvicorn's
timeout_graceful_shutdown, 5 s, far below the pod's terminationGracePeriodSeconds)."""

import json
import signal
import socket
import ssl
import time
from pathlib import Path

from tests.webhook.conftest import Pki
from tests.webhook.helpers import review, simple_pod
from tests.webhook.server import RunningWebhook, run_webhook

GRACE_S = 5.0  # webhook/__main__.py
# Room for interpreter teardown on a loaded 2-core machine; the grace itself is what the
# server waits for a request that never completes.
EXIT_MARGIN_S = 3.0


def open_request(webhook: RunningWebhook, body: bytes) -> ssl.SSLSocket:
    """A POST /mutate whose handler is running, waiting for the body: the server sends
    `100 Continue` only once the application reads the body."""
    context = ssl.create_default_context(cafile=str(webhook.ca_file))
    raw = socket.create_connection(("127.0.0.1", webhook.port), timeout=10)
    tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
    head = (
        "POST /mutate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    )
    tls.sendall(head.encode())
    interim = tls.recv(4096)
    assert interim.startswith(b"HTTP/1.1 100 "), interim
    return tls


def read_response(tls: ssl.SSLSocket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = int(
        next(
            v for k, _, v in (h.partition(": ") for h in lines[1:]) if k.lower() == "content-length"
        )
    )
    while len(rest) < length:
        chunk = tls.recv(65536)
        assert chunk
        rest += chunk
    return int(lines[0].split()[1]), rest[:length]


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_answers_in_flight_refuses_new_and_exits_in_time(
    tmp_path: Path, module_pki: Pki
) -> None:
    pki = module_pki
    body = json.dumps(review(simple_pod())).encode()
    with run_webhook(tmp_path, pki.cert_file, pki.key_file, pki.ca_file) as webhook:
        answered = open_request(webhook, body)
        stalled = open_request(webhook, body)  # its body never comes
        try:
            webhook.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            deadline = signalled + GRACE_S
            while not refuses_connections(webhook.port):
                assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
                time.sleep(0.02)  # poll interval of a bounded wait
            assert webhook.process.poll() is None, "exited with an admission in flight"
            answered.sendall(body)
            status, payload = read_response(answered)
            assert status == 200
            response = json.loads(payload)["response"]
            assert response["allowed"] is True and "patch" in response
            code = webhook.process.wait(timeout=GRACE_S + EXIT_MARGIN_S)
            took = time.monotonic() - signalled
        finally:
            answered.close()
            stalled.close()
    # uvicorn re-raises the signal once it has shut down, so the exit is "killed by SIGTERM".
    assert code in (0, -signal.SIGTERM), webhook.log_text()
    assert took <= GRACE_S + EXIT_MARGIN_S
    # The stalled request was given the whole grace period, then cancelled.
    assert took >= GRACE_S - 0.5
    assert "timeout graceful shutdown exceeded" in webhook.log_text()
