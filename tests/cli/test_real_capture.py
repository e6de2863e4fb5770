"""From a real capture to the culprit: a real Go leak in a real cgroup v1 memory group is
captured by the real watcher (`python -m sidecar`) before the kernel OOM-kills it; then the
CLI finds those very dumps, in the bucket after upload and in DUMP_DIR when there is no
bucket, lists them with the watcher's figures, fetches them and names the leaking function.

Needs root, the v1 memory controller and MinIO (built and cached by testinfra)."""

import json
import secrets
from pathlib import Path

import pytest

from testinfra.minio import MinioServer
from tests.sidecar.upload_harness import (
    PodView,
    leak_until_killed,
    running_watcher,
    saved_keys,
    watcher_env,
)

from .run import cli

pytestmark = [pytest.mark.s3, pytest.mark.cgroup, pytest.mark.usefixtures("cgroup_v1")]


def check_listed(capsys, where: list[str], keys: list[str], pid: int) -> list[dict]:
    """`list` shows exactly the watcher's dumps of `pid`, with its metadata, newest first."""
    result = cli(capsys, "dumps", "list", "api-7d9f8", "-n", "shop", "--top", "-o", "json", *where)
    assert result.code == 0, result.err
    records = json.loads(result.out)
    assert sorted(r["key"] for r in records) == sorted(keys)
    assert [r["when"] for r in records] == sorted((r["when"] for r in records), reverse=True)
    for record in records:
        meta = record["metadata"]
        assert (meta["pid"], meta["comm"], meta["key"]) == (pid, "go-memory-leak", record["key"])
        assert meta["percent"] >= meta["threshold"]
        assert record["top"][0]["name"] == "main.leakDocuments", record["key"]
    return records


def test_the_cli_finds_a_real_capture_in_the_bucket(
    capsys, minio: MinioServer, s3: list[str], leak_binary: Path, tmp_path: Path
) -> None:
    bucket = f"real-{secrets.token_hex(4)}"
    minio.make_bucket(bucket)
    dump_dir, view = tmp_path / "spool", PodView(tmp_path / "proc")
    with running_watcher(watcher_env(minio, bucket, dump_dir, view)) as watcher:
        pid = leak_until_killed(leak_binary, view, watcher)
        keys = saved_keys(watcher, dump_dir, pid)
        assert keys, str(watcher)
        for key in keys:
            watcher.wait_for(lambda line, k=key: line.is_event("upload-done", key=k), key)
        assert watcher.terminate() == 0
    where = ["--bucket", bucket, "--endpoint-url", minio.endpoint_url]
    records = check_listed(capsys, where, keys, pid)
    newest = records[0]["key"]
    top = cli(capsys, "dumps", "top", newest.rsplit("/", 1)[-1], "-n", "1", "-o", "json", *where)
    assert top.code == 0, top.err
    assert json.loads(top.out)["functions"][0]["name"] == "main.leakDocuments"
    saved = tmp_path / "got.pb.gz"
    got = cli(capsys, "dumps", "get", newest, "-o", str(saved), "--metadata", *where)
    assert got.code == 0, got.err
    assert json.loads((tmp_path / "got.json").read_text())["key"] == newest


def test_the_cli_finds_a_real_capture_kept_in_dump_dir(
    capsys, minio: MinioServer, leak_binary: Path, tmp_path: Path
) -> None:
    dump_dir, view = tmp_path / "spool", PodView(tmp_path / "proc")
    env = watcher_env(minio, "", dump_dir, view)  # no bucket: dumps stay in DUMP_DIR
    with running_watcher(env) as watcher:
        pid = leak_until_killed(leak_binary, view, watcher)
        keys = saved_keys(watcher, dump_dir, pid)
        assert keys, str(watcher)
        assert watcher.terminate() == 0
    check_listed(capsys, ["--dir", str(dump_dir)], keys, pid)
