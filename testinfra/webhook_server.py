"""Our webhook as a real process, with certificates from `python -m certs`, registered in a
real API server through the MutatingWebhookConfiguration that `deploy/` renders.

The API server reaches the webhook at `https://localhost:<port>/mutate`, so the serving
certificate must name `localhost` besides the Service's cluster DNS forms:
`python -m certs generate --dns-name localhost` adds it.
"""

import base64
import copy
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testinfra.netutil import free_port
from testinfra.process import start_process, stop_process, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPLOY_DIR = REPO_ROOT / "deploy"
WEBHOOK_NAMESPACE = "oomdump-system"
WEBHOOK_SERVICE = "oomdump-webhook"
READY_TIMEOUT = 30.0
# Short enough that a hung webhook cannot stall a test for long; <= 5 as deploy/ promises.
WEBHOOK_TIMEOUT_SECONDS = 3


@dataclass(frozen=True)
class WebhookCerts:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def cert(self) -> Path:
        return self.folder / "tls.crt"

    @property
    def key(self) -> Path:
        return self.folder / "tls.key"


def generate_certs(out: Path) -> WebhookCerts:
    """A CA and a serving pair for `localhost`, written by the product's own CLI."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "certs",
            "generate",
            "--service",
            WEBHOOK_SERVICE,
            "--namespace",
            WEBHOOK_NAMESPACE,
            "--dns-name",
            "localhost",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"python -m certs generate failed:\n{result.stdout}{result.stderr}")
    return WebhookCerts(out)


class WebhookServer:
    """`python -m webhook` on a fixed loopback port; restartable, in either sidecar mode."""

    def __init__(self, certs: WebhookCerts, sidecar_image: str, log_path: Path) -> None:
        self.certs = certs
        self.sidecar_image = sidecar_image
        self.log_path = log_path
        self.port = free_port()
        self.mode = "container"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/mutate"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, mode: str = "container") -> None:
        """Start in `mode` (container|native) and return once /readyz answers over TLS."""
        if self.running:
            raise RuntimeError("the webhook is already running; stop() it first")
        self.mode = mode
        args = [
            sys.executable,
            "-m",
            "webhook",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--tls-cert-file",
            str(self.certs.cert),
            "--tls-key-file",
            str(self.certs.key),
            "--sidecar-image",
            self.sidecar_image,
            "--sidecar-mode",
            mode,
        ]
        self._process = start_process(args, self.log_path, cwd=REPO_ROOT)
        try:
            wait_until(
                self.ready,
                what=f"python -m webhook on port {self.port}",
                timeout=READY_TIMEOUT,
                process=self._process,
                log_path=self.log_path,
            )
        except BaseException:
            self.stop()
            raise

    def ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.certs.ca))
        try:
            url = f"https://localhost:{self.port}/readyz"
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
            return False

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process(process)

    def freeze(self) -> None:
        """SIGSTOP the server: connections are accepted by the kernel, never answered."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> None:
        if not self.running or self._process is None:
            raise RuntimeError("the webhook is not running")
        os.killpg(self._process.pid, signum)


def rendered_webhook_configuration(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The one MutatingWebhookConfiguration among the rendered `deploy/` objects."""
    found = [o for o in objects if o.get("kind") == "MutatingWebhookConfiguration"]
    if len(found) != 1:
        raise ValueError(f"deploy/ renders {len(found)} MutatingWebhookConfigurations, not 1")
    return found[0]


def pointed_at(
    configuration: dict[str, Any], url: str, ca_pem: bytes, timeout_seconds: int
) -> dict[str, Any]:
    """A copy of `configuration` whose webhooks call `url`, trusting `ca_pem`, and give up
    after `timeout_seconds`; everything else (selectors, rules, policies) is kept."""
    result = copy.deepcopy(configuration)
    for hook in result["webhooks"]:
        hook["clientConfig"] = {"url": url, "caBundle": base64.b64encode(ca_pem).decode()}
        hook["timeoutSeconds"] = min(int(hook.get("timeoutSeconds", 10)), timeout_seconds)
    return result
