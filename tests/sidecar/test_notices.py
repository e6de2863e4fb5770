"""The watcher tells the operator: a real leak in a real cgroup v1 group, killed by the
kernel, and the notices the real watcher (its defaults) sends over real TLS to a notice
endpoint of the test's (the webhook's side, which turns them into Events, is tested in
tests/e2e/test_events.py): who was captured, at what figure, where the dump is, and the
leaking function. Needs root and the v1 memory controller."""

import json
import re
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from testinfra.cgroups import MiB, memory_cgroup
from testinfra.pki import create_ca
from testinfra.waiting import wait_for
from tests.sidecar.harness import make_watcher, running

pytestmark = [pytest.mark.cgroup, pytest.mark.usefixtures("cgroup_v1")]
TOKEN = "a-projected-token"


@contextmanager
def notice_endpoint(folder: Path) -> Iterator[tuple[str, str, list[dict]]]:
    """(url, CA PEM, notices received) of an HTTPS endpoint answering 200."""
    ca = create_ca(folder)
    pair = ca.issue(folder, "notice", "localhost", ip_addresses=("127.0.0.1",), server=True)
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(
                {"auth": self.headers["Authorization"], "path": self.path, **json.loads(body)}
            )
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pair.cert_path, pair.key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}/notice"
        yield url, ca.cert_path.read_text(), received
    finally:
        server.shutdown()
        server.server_close()


def test_a_capture_is_told_with_the_process_the_figure_the_place_and_the_culprit(
    leak_binary: Path, tmp_path: Path, logs
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with notice_endpoint(tmp_path) as (url, ca_pem, received), memory_cgroup(256 * MiB) as group:
        app = group.spawn(
            [
                str(leak_binary),
                "-port",
                "0",
                "-mode",
                "gradual",
                "-step",
                str(8 * MiB),
                "-interval",
                "50ms",
            ],
            stdout=subprocess.DEVNULL,
        )
        env = {
            "CRITICAL": "70",
            "DUMP_DIR": str(tmp_path / "dumps"),
            "POD_NAMESPACE": "shop",
            "POD_NAME": "api-0",
            "NOTIFY_URL": url,
            "NOTIFY_CA": ca_pem,
            "NOTIFY_TOKEN_FILE": str(token_file),
        }
        watcher = make_watcher(env, select=lambda process: process.pid == app.pid)
        with running(watcher):
            assert app.wait(timeout=60) == -9
            wait_for(lambda: received, "the capture's notice")
    captured = [n for n in received if n["reason"] == "HeapProfileCaptured"]
    assert captured, received
    notice = captured[0]
    assert notice["auth"] == f"Bearer {TOKEN}" and notice["path"] == "/notice"
    assert (notice["pod"], notice["namespace"]) == ("api-0", "shop")
    assert notice["pid"] == app.pid and notice["comm"] == "go-memory-leak"
    assert notice["percent"] >= 70 and notice["limit"] == 256 * MiB
    assert notice["cgroup"] == f"/{group.name}"
    assert Path(notice["location"]).is_file()  # the pod-local path until uploaded
    assert notice["top"][0]["name"] == "main.leakDocuments"
    assert re.fullmatch(r"[0-9a-f]{32}", notice["id"])  # the webhook counts a retry once
    assert len({n["id"] for n in received}) == len(received)  # one id per notice
    metadata = json.loads(Path(notice["location"][: -len(".pb.gz")] + ".json").read_text())
    assert metadata["top"][0]["name"] == "main.leakDocuments"
    assert logs.matching("event=dump-top", f"pid={app.pid} ", 'top="main.leakDocuments ')
    assert logs.matching("event=notice-sent", f"pid={app.pid} ")


def test_a_later_capture_of_the_same_process_says_what_grew(
    leak_binary: Path, tmp_path: Path, logs
) -> None:
    """Two captures of one leaking process (a short COOLDOWN): the later dump's metadata
    names what grew since the earlier one, the leaking function first."""
    dumps = tmp_path / "dumps"
    with memory_cgroup(256 * MiB) as group:
        app = group.spawn(
            [
                str(leak_binary),
                "-port",
                "0",
                "-mode",
                "gradual",
                "-step",
                str(2 * MiB),
                "-interval",
                "50ms",
            ],
            stdout=subprocess.DEVNULL,
        )
        env = {"CRITICAL": "40", "COOLDOWN": "1s", "DUMP_DIR": str(dumps)}
        watcher = make_watcher(env, select=lambda process: process.pid == app.pid)
        with running(watcher):
            assert app.wait(timeout=60) == -9
    complete = [
        json.loads(path.read_text())
        for path in sorted(dumps.rglob("*.json"))
        if json.loads(path.read_text())["gc"]
    ]
    assert len(complete) >= 2, "\n".join(logs.lines[-30:])
    assert "growth" not in complete[0]
    later = complete[1]
    assert later["growth_since"] == complete[0]["key"]
    assert later["growth"][0]["name"] == "main.leakDocuments"
    assert later["growth"][0]["delta_bytes"] > 8 * MiB
    assert logs.matching("event=dump-top", 'grew="main.leakDocuments +')
