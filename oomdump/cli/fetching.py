"""`oomdump dumps get` (save a dump and its metadata) and `oomdump dumps open` (go tool pprof)."""

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from oomdump.cli.errors import NO_GO, NOT_FOUND, CliError
from oomdump.cli.records import metadata_key
from oomdump.cli.resolve import Dump
from oomdump.cli.stores import MAX_METADATA_BYTES, Store, read_file
from sidecar.spool import METADATA_SUFFIX, PROFILE_SUFFIX

_PRINTED_HTTP = "127.0.0.1:8080"


def _basename(dump: Dump) -> str:
    return dump.name.rsplit("/", 1)[-1]


def _target(dump: Dump, output: str | None) -> Path:
    if output is None:
        return Path(_basename(dump))
    path = Path(output)
    return path / _basename(dump) if path.is_dir() else path


def _write_new(path: Path, data: bytes, force: bool) -> None:
    """Write through a temporary beside `path`, then rename: no half-written profile stays."""
    if path.exists() and not force:
        raise CliError(NOT_FOUND, f"{path} exists; use --force to replace it")
    temporary = path.with_name(f".{path.name}.part")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def get(dump: Dump, store: Store | None, output: str | None, metadata: bool, force: bool) -> None:
    data = dump.read()
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    path = _target(dump, output)
    if dump.local_path is not None and path.exists() and path.samefile(dump.local_path):
        raise CliError(NOT_FOUND, f"{path} is the dump itself")
    _write_new(path, data, force)
    print(f"{path}  ({len(data)} bytes, from {dump.url})", file=sys.stderr)
    if not metadata:
        return
    document = _metadata_bytes(dump, store)
    if document is None:
        print(f"no metadata (.json) beside {dump.url}", file=sys.stderr)
        return
    name = path.name.removesuffix(PROFILE_SUFFIX) + METADATA_SUFFIX
    if name == path.name:
        name = path.name + METADATA_SUFFIX
    _write_new(path.with_name(name), document, force)
    print(f"{path.with_name(name)}  (metadata)", file=sys.stderr)


def _metadata_bytes(dump: Dump, store: Store | None) -> bytes | None:
    if dump.local_path is not None:
        sibling = dump.local_path.with_name(
            dump.local_path.name.removesuffix(PROFILE_SUFFIX) + METADATA_SUFFIX
        )
        if sibling != dump.local_path and sibling.is_file():
            return read_file(sibling, MAX_METADATA_BYTES)
        return None
    if store is None:
        return None
    try:
        return store.read(metadata_key(dump.name), MAX_METADATA_BYTES)
    except CliError as error:
        if error.code == NOT_FOUND:
            return None
        raise


def pprof_command(
    go: str, path: str, top: bool, sample_index: str, extra: list[str], http: str = "127.0.0.1:0"
) -> list[str]:
    mode = ["-top"] if top else [f"-http={http}"]
    return [go, "tool", "pprof", *mode, f"-sample_index={sample_index}", *extra, path]


def _free_loopback() -> str:
    """A free loopback port: pprof binds `:0` too, but never says which port it got."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def open_(dump: Dump, go: str, top: bool, sample_index: str, extra: list[str]) -> int:
    """Run go tool pprof on the dump (downloaded to a temporary folder when it is a key)."""
    found = shutil.which(go)
    if found is None:
        shown = dump.name if dump.local_path is not None else _basename(dump)
        # A fixed port: pprof never says which port `:0` gave it.
        command = shlex.join(pprof_command("go", shown, top, sample_index, extra, _PRINTED_HTTP))
        fetch = (
            ""
            if dump.local_path is not None
            else (f"  oomdump dumps get {shlex.quote(dump.name)} -o {shlex.quote(shown)}\n")
        )
        raise CliError(
            NO_GO,
            f"Go is not installed ({go!r} is not on PATH); `dumps open` runs go tool pprof.\n"
            "Install Go (https://go.dev/dl/), or read the profile without it: "
            f"oomdump dumps top {shlex.quote(dump.name)}\nThe command, with Go:\n"
            f"{fetch}  {command}",
        )
    with tempfile.TemporaryDirectory(prefix="oomdump-") as folder:
        if dump.local_path is not None:
            path = str(dump.local_path)
        else:
            path = str(Path(folder) / _basename(dump))
            Path(path).write_bytes(dump.read())
        http = _free_loopback()
        command = pprof_command(found, path, top, sample_index, extra, http)
        print("+ " + shlex.join(command), file=sys.stderr)
        if not top:
            print(f"pprof web UI: http://{http}/ (Ctrl-C ends it)", file=sys.stderr, flush=True)
        try:
            code = subprocess.run(command, check=False).returncode
        except OSError as error:
            raise CliError(NO_GO, f"cannot run {found}: {error}") from None
    if code != 0:
        raise CliError(NO_GO, f"go tool pprof exited with status {code}")
    return 0
