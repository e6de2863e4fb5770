"""The notice path against a real API server: the webhook as a process with the token of
its ServiceAccount (so RBAC from `deploy/` decides its calls), pods that the API server
stores after our webhook injected them, and tokens the API server issues for them.

Pods are stored, never scheduled (no kubelet here): a TokenRequest bound to a stored Pod
is exactly the token the kubelet would project, so the webhook sees real bound tokens.
"""

import http.client
import json
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes import client

from testinfra.process import start_process, stop_process, wait_until
from testinfra.webhook_server import REPO_ROOT, WebhookCerts

READY_TIMEOUT = 30.0
EVENT_TIMEOUT = 15.0
FORWARDED = ("Content-Type", "Authorization")
HANGUP_TIMEOUT = 10.0  # how long the relay holds a lost answer for the client to give up
CONTAINER_ID = "5e" * 32  # the runtime id the tests give the app container


@dataclass(frozen=True)
class NoticeWebhook:
    port: int
    certs: WebhookCerts
    log: Path

    @property
    def mutate_url(self) -> str:
        return f"https://localhost:{self.port}/mutate"

    @property
    def notice_url(self) -> str:
        return f"https://localhost:{self.port}/notice"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certs.ca))

    def post(self, body: bytes, token: str | None, **headers: str) -> tuple[int, dict[str, Any]]:
        """POST /notice: (status, JSON answer with the response headers under `_headers`)."""
        sent = {"Content-Type": "application/json", **headers}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.notice_url, data=body, headers=sent, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.context()) as response:
                status, raw, answer_headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, raw, answer_headers = error.code, error.read(), error.headers
        answer = json.loads(raw)
        answer["_headers"] = {name.lower(): value for name, value in answer_headers.items()}
        return status, answer

    def metrics(self) -> str:
        url = f"https://localhost:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5, context=self.context()) as response:
            return response.read().decode()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _ready(port: int, certs: WebhookCerts) -> bool:
    context = ssl.create_default_context(cafile=str(certs.ca))
    try:
        url = f"https://localhost:{port}/readyz"
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
        return False


@contextmanager
def notice_webhook(
    certs: WebhookCerts, kubeconfig: Path, image: str, log: Path, *extra: str
) -> Iterator[NoticeWebhook]:
    """`python -m webhook` on a free loopback port, its API calls made with `kubeconfig`."""
    from testinfra.netutil import free_port

    port = free_port()
    args = [
        sys.executable, "-m", "webhook", "--host", "127.0.0.1", "--port", str(port),
        "--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key),
        "--sidecar-image", image, "--kubeconfig", str(kubeconfig), *extra,
    ]  # fmt: skip
    process = start_process(args, log, cwd=REPO_ROOT)
    try:
        wait_until(
            lambda: _ready(port, certs),
            what=f"python -m webhook (notices) on port {port}",
            timeout=READY_TIMEOUT,
            process=process,
            log_path=log,
        )
        yield NoticeWebhook(port, certs, log)
    finally:
        stop_process(process)


def token_for(
    core: client.CoreV1Api,
    namespace: str,
    service_account: str,
    audiences: list[str],
    pod: client.V1Pod | None = None,
) -> str:
    """A token the API server issues (TokenRequest), bound to `pod` when given."""
    bound = None
    if pod is not None:
        bound = client.V1BoundObjectReference(
            api_version="v1", kind="Pod", name=pod.metadata.name, uid=pod.metadata.uid
        )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(
            audiences=audiences, expiration_seconds=600, bound_object_ref=bound
        )
    )
    answer = core.create_namespaced_service_account_token(service_account, namespace, request)
    return answer.status.token


def give_container_id(core: client.CoreV1Api, pod: client.V1Pod, container: str) -> None:
    """What the kubelet reports once the container runs: its runtime id in the status."""
    status = {
        "status": {
            "containerStatuses": [
                {
                    "name": container,
                    "containerID": f"containerd://{CONTAINER_ID}",
                    "image": "registry.example/leaky-go-app:1.0",
                    "imageID": "",
                    "ready": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                }
            ]
        }
    }
    core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, status)


def app_cgroup() -> str:
    """The app container's cgroup as a watcher on a systemd-driver node reads it."""
    return (
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0.slice/"
        f"cri-containerd-{CONTAINER_ID}.scope"
    )


def events_on(core: client.CoreV1Api, pod: client.V1Pod) -> list[client.CoreV1Event]:
    """The Events `kubectl describe pod` lists: those whose involvedObject is this pod."""
    selector = ",".join(
        (
            f"involvedObject.name={pod.metadata.name}",
            f"involvedObject.namespace={pod.metadata.namespace}",
            "involvedObject.kind=Pod",
            f"involvedObject.uid={pod.metadata.uid}",
        )
    )
    return core.list_namespaced_event(pod.metadata.namespace, field_selector=selector).items


def wait_for_events(
    core: client.CoreV1Api, pod: client.V1Pod, predicate: Any, what: str
) -> list[client.CoreV1Event]:
    deadline = time.monotonic() + EVENT_TIMEOUT
    while True:
        found = events_on(core, pod)
        if predicate(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: events on the pod are {[e.to_dict() for e in found]}")
        time.sleep(0.05)  # poll interval of a bounded wait


@dataclass(frozen=True)
class Relayed:
    """One request through the relay: the notice, the webhook's answer, and whether the
    answer was kept from the client."""

    notice: dict[str, Any]
    status: int
    answer: dict[str, Any]
    lost: bool


@dataclass(frozen=True)
class Relay:
    url: str
    relayed: list[Relayed]


@contextmanager
def answer_losing_relay(webhook: NoticeWebhook, lose: int, hold: bool = False) -> Iterator[Relay]:
    """An HTTPS relay in front of `webhook`, serving the webhook's own pair (so a client
    trusting the webhook's CA trusts it). Each request goes to the webhook and its answer
    is read in full, so the webhook has done its work; the first `lose` answers never
    reach the client: the connection is closed without a response (a reset), or, with
    `hold`, kept silent until the client hangs up (its timeout fires)."""
    relayed: list[Relayed] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            sent = {name: self.headers[name] for name in FORWARDED if name in self.headers}
            status, raw, content_type = _forward(webhook, self.path, body, sent)
            with lock:
                lost = sum(r.lost for r in relayed) < lose
                relayed.append(Relayed(json.loads(body), status, json.loads(raw), lost))
            if lost:
                if hold:
                    _wait_for_hangup(self.connection)
                self.close_connection = True
                return  # no response: the server closes the connection
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(webhook.certs.cert, webhook.certs.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="relay", daemon=True)
    thread.start()
    try:
        yield Relay(f"https://localhost:{server.server_address[1]}/notice", relayed)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(HANGUP_TIMEOUT)


def _forward(
    webhook: NoticeWebhook, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes, str]:
    connection = http.client.HTTPSConnection(
        "localhost", webhook.port, timeout=10, context=webhook.context()
    )
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("Content-Type", "")
    finally:
        connection.close()


def _wait_for_hangup(connection: socket.socket) -> None:
    """Until the client closes its side (EOF or a reset), at most HANGUP_TIMEOUT."""
    connection.settimeout(HANGUP_TIMEOUT)
    try:
        while connection.recv(1024):
            pass
    except OSError:  # reset, or the bound: either way the client had its chance
        pass
