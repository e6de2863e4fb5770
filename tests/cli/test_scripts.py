"""The installed console scripts, `kubectl oomdump` through kubectl's plugin discovery, --help
for every command, and the exit codes for bad usage and an unusable store."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from oomdump.cli import errors
from testinfra.netutil import free_port

from .captures import Captures
from .run import cli, script, table

COMMANDS = ("list", "get", "top", "diff", "open")


def child_env(**extra: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, **extra}


@pytest.mark.parametrize("name", ["oomdump", "kubectl-oomdump"])
def test_console_script_runs(name: str, captures: Captures) -> None:
    done = subprocess.run(
        [str(script(name)), "dumps", "list", "--dir", str(captures.spool), "-n", "shop"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert {r["POD"] for r in table(done.stdout)} == {"api-7d9f8", "worker-1"}


def test_kubectl_finds_the_plugin_on_path(captures: Captures, tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl binary here; test_console_script_runs covers kubectl-oomdump")
    plugins = tmp_path / "bin"  # only the plugin, so kubectl cannot find another oomdump
    plugins.mkdir()
    (plugins / "kubectl-oomdump").symlink_to(script("kubectl-oomdump"))
    env = child_env(PATH=f"{plugins}:{os.environ['PATH']}", KUBECONFIG=str(tmp_path / "none"))
    listed = subprocess.run(
        [kubectl, "plugin", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert str(plugins / "kubectl-oomdump") in listed.stdout, listed.stdout + listed.stderr
    done = subprocess.run(
        [
            kubectl,
            "oomdump",
            "dumps",
            "list",
            "api-7d9f8",
            "-n",
            "shop",
            "--dir",
            str(captures.spool),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"pod": "api-7d9f8"' in done.stdout
    missing = subprocess.run(
        [kubectl, "oomdump", "dumps", "top", "no/such/dump"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert missing.returncode == errors.NOT_FOUND
    assert missing.stderr.startswith("kubectl oomdump: ")  # named as the operator typed it


def test_every_command_has_help(capsys) -> None:
    for command in COMMANDS:
        result = cli(capsys, "dumps", command, "--help")
        assert result.code == 0
        assert f"dumps {command}" in result.out
        assert "exit codes:" in result.out
    top = cli(capsys, "--help")
    assert top.code == 0 and "dumps" in top.out


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["dumps", "list", "--dir", ".", "--since", "2 hours"], "'2 hours' is not a Go-style"),
        (["dumps", "list", "--dir", ".", "-o", "yaml"], "invalid choice: 'yaml'"),
        (["dumps", "list", "--dir", ".", "--limit", "-1"], "-1 is less than 0"),
        (["dumps", "top", "x", "-n", "0"], "0 is less than 1"),
        (["dumps", "top", "x", "--sample-index", "cpu"], "invalid choice: 'cpu'"),
        (["dumps", "list"], "give --bucket NAME, --dir PATH or --in-pod NAMESPACE/POD"),
        (
            ["dumps", "list", "--bucket", "b", "--dir", "."],
            "give one of --bucket, --dir or --in-pod",
        ),
        (["dumps", "list", "--dir", ".", "a", "--pod", "b"], "POD 'a' and --pod 'b' differ"),
        (["dumps", "list", "--in-pod", "just-a-pod"], "give NAMESPACE/POD"),
        (["dumps", "get", "k", "--in-pod", "ns/p", "--dir", "."], "give one of --bucket"),
        (["dumps", "list", "--bucket", "s3://b/x/", "--prefix", "y/"], "contradicts"),
        (["dumps"], "COMMAND"),
        ([], "usage:"),
    ],
)
def test_bad_usage_exits_2_naming_what_is_wrong(capsys, args, named) -> None:
    result = cli(capsys, *args)
    assert result.code == errors.USAGE, result
    assert named in result.err
    assert "Traceback" not in result.err


def test_unusable_stores_exit_4_with_the_reason(capsys, s3, minio, monkeypatch, tmp_path) -> None:
    endpoint = ["--endpoint-url", minio.endpoint_url]
    missing = cli(capsys, "dumps", "list", "--bucket", "no-such-bucket", *endpoint)
    assert missing.code == errors.STORE
    assert "bucket 'no-such-bucket' does not exist" in missing.err

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    wrong = cli(capsys, "dumps", "list", *s3)
    assert wrong.code == errors.STORE
    assert f"the secret key is wrong for {minio.endpoint_url}" in wrong.err

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    none = cli(capsys, "dumps", "list", *s3)
    assert none.code == errors.STORE
    assert "no AWS credentials found" in none.err

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", minio.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", minio.secret_key)
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    unreachable = cli(capsys, "dumps", "top", "k", "--bucket", "dumps", "--endpoint-url", down)
    assert unreachable.code == errors.STORE
    assert f"cannot reach {down}" in unreachable.err

    folder = cli(capsys, "dumps", "list", "--dir", str(tmp_path / "absent"))
    assert folder.code == errors.STORE
    assert "no such folder" in folder.err
    for result in (missing, wrong, none, unreachable, folder):
        assert "Traceback" not in result.err and result.out == ""


def test_store_flags_come_from_the_environment(capsys, captures, monkeypatch) -> None:
    monkeypatch.setenv("OOMDUMP_DIR", str(captures.spool))
    monkeypatch.setenv("OOMDUMP_PREFIX", "oom/shop/")  # not a namespace: nothing beneath it
    result = cli(capsys, "dumps", "list", "-n", "attic")
    assert result.code == 0 and result.out == ""
    monkeypatch.setenv("OOMDUMP_PREFIX", "oom/")
    result = cli(capsys, "dumps", "list", "-n", "attic")
    assert [r["POD"] for r in table(result.out)] == ["evil-0", "evil-0"]


def test_get_to_stdout_and_no_boto3_for_a_folder(captures: Captures) -> None:
    """`-o -` pipes the profile; reading a folder never loads boto3 (seconds of start-up)."""
    probe = (
        "import sys\n"
        "from oomdump.cli.main import main\n"
        "code = main(sys.argv[1:])\n"
        "sys.stderr.write(f'boto3={\"boto3\" in sys.modules} code={code}')\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            "dumps",
            "get",
            captures.later.key,
            "-o",
            "-",
            "--dir",
            str(captures.spool),
        ],
        capture_output=True,
        timeout=60,
        env=child_env(),
        check=False,
    )
    assert done.stderr.decode().endswith("boto3=False code=0"), done.stderr
    assert done.stdout == captures.later.profile.read_bytes()
