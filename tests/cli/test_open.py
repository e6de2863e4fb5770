"""`oomdump dumps open`: go tool pprof run for real on a local dump or a key (downloaded to a
temporary folder that is removed after), and the exact commands when Go is absent."""

import os
import re
import select
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from oomdump.cli import errors

from .run import script

pytestmark = pytest.mark.s3


def env_for(tmp_path: Path, path: str, **extra: str) -> dict[str, str]:
    temporary = tmp_path / "tmp"
    temporary.mkdir(exist_ok=True)
    # HOME and GOCACHE stay: Go builds `go tool pprof` once into its cache and reuses it.
    kept = {k: os.environ[k] for k in ("HOME", "GOCACHE", "GOPATH") if k in os.environ}
    return {**kept, "PATH": path, "TMPDIR": str(temporary), **extra}


def run_open(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(script("oomdump")), "dumps", "open", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )


def test_open_top_runs_go_tool_pprof_on_a_local_dump(go, captures, tmp_path) -> None:
    env = env_for(tmp_path, os.environ["PATH"])
    done = run_open(["--top", str(captures.later.profile)], env)
    assert done.returncode == 0, done.stderr
    assert f"tool pprof -top -sample_index=inuse_space {captures.later.profile}" in done.stderr
    assert "Type: inuse_space" in done.stdout
    first = next(
        line for line in done.stdout.splitlines() if line.strip().endswith("main.leakDocuments")
    )
    assert re.match(r"^\s*[\d.]+[kMG]?B\s+[\d.]+%", first), first


def test_open_top_downloads_a_key_and_removes_it_after(go, s3, minio, captures, tmp_path) -> None:
    env = env_for(
        tmp_path,
        os.environ["PATH"],
        AWS_ACCESS_KEY_ID=minio.access_key,
        AWS_SECRET_ACCESS_KEY=minio.secret_key,
        AWS_REGION="us-east-1",
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
    )
    file_name = captures.later.key.rsplit("/", 1)[-1]
    done = run_open(["--top", file_name, "--sample-index", "alloc_space", *s3], env)
    assert done.returncode == 0, done.stderr
    assert "Type: alloc_space" in done.stdout
    assert "main.leakDocuments" in done.stdout
    assert f"/{file_name}" in done.stderr  # the downloaded copy, named as the key
    assert list((tmp_path / "tmp").iterdir()) == []


def poll_page(url: str, process: subprocess.Popen[str], deadline: float) -> str:
    """The page, once pprof listens (it prints its line before it binds)."""
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=30) as page:
                return page.read().decode()
        except urllib.error.URLError:
            time.sleep(0.1)  # a bounded poll: connection refused until pprof has bound
    raise AssertionError(f"go tool pprof never answered on {url}")


def test_open_serves_the_web_ui_until_interrupted(go, captures, tmp_path) -> None:
    env = env_for(tmp_path, os.environ["PATH"])
    process = subprocess.Popen(
        [str(script("oomdump")), "dumps", "open", str(captures.later.profile), "--", "-no_browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], deadline - time.monotonic())
            line = process.stdout.readline() if ready else ""
            if not line and process.poll() is not None:
                break
            match = re.search(r"pprof web UI: (http://127\.0\.0\.1:\d+)/", line)
            url = match[1] if match else None
        assert url, "oomdump did not say where the web UI is"
        page = poll_page(f"{url}/ui/top", process, deadline)
        assert "main.leakDocuments" in page
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C, as the operator ends it
        assert process.wait(timeout=30) == errors.INTERRUPTED
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_without_go_the_exact_commands_are_printed(captures, tmp_path) -> None:
    bin_only = str(Path(script("oomdump")).parent)  # the venv: python, no go
    env = env_for(tmp_path, bin_only)
    local = run_open([str(captures.later.profile)], env)
    assert local.returncode == errors.NO_GO
    assert "Go is not installed" in local.stderr
    assert (
        f"go tool pprof -http=127.0.0.1:8080 -sample_index=inuse_space "
        f"{captures.later.profile}" in local.stderr
    )
    assert f"oomdump dumps top {captures.later.profile}" in local.stderr
    assert "Traceback" not in local.stderr

    stored = run_open(["--top", captures.later.key, "--dir", str(captures.spool)], env)
    assert stored.returncode == errors.NO_GO
    file_name = captures.later.key.rsplit("/", 1)[-1]
    assert f"oomdump dumps get {captures.later.key} -o {file_name}" in stored.stderr
    assert f"go tool pprof -top -sample_index=inuse_space {file_name}" in stored.stderr
