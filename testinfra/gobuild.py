"""Build Go programs once and keep them in a cache outside the repository.

Binaries land in `~/.cache/oomdump/<name>-<key>/<name>` (`OOMDUMP_CACHE` moves the root),
where the key is a pinned version or a hash of the sources, so a warm run reuses them and
a changed source or version builds anew. A file lock lets parallel test runs share one
build.
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE_ROOT = Path(os.environ.get("OOMDUMP_CACHE", Path.home() / ".cache" / "oomdump"))


class GoBuildError(RuntimeError):
    """A Go build failed; the message carries the compiler's output."""


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached_binary(name: str, key: str, build: Callable[[Path], None]) -> Path:
    """The cached binary `name` for `key`, calling `build(output_path)` only when it is missing."""
    folder = CACHE_ROOT / f"{name}-{key}"
    binary = folder / name
    if binary.exists():
        return binary
    with _locked(CACHE_ROOT / f".{name}-{key}.lock"):
        if binary.exists():
            return binary
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{name}.partial"
        build(partial)
        partial.rename(binary)
    return binary


def run_go(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    """Run `go ARGS` in `cwd`, raising GoBuildError with the output when it fails."""
    go = shutil.which("go")
    if go is None:
        raise GoBuildError("the `go` toolchain is not on PATH; oomdump's tests need Go >= 1.22")
    full_env = {**os.environ, "GOFLAGS": "-buildvcs=false", **(env or {})}
    result = subprocess.run(
        [go, *args], cwd=cwd, env=full_env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise GoBuildError(f"go {' '.join(args)} failed in {cwd}:\n{result.stdout}{result.stderr}")


def source_hash(folder: Path) -> str:
    """A short hash of every file below `folder`, so an edited source builds anew."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_local(name: str, source_dir: Path) -> Path:
    """Build the Go main package in `source_dir` (a module of its own, standard library or
    modules from the proxy) and return the cached binary."""

    def build(output: Path) -> None:
        run_go(["build", "-trimpath", "-o", str(output), "."], cwd=source_dir)

    return cached_binary(name, source_hash(source_dir), build)


def build_from_module(name: str, key: str, go_mod: str, package: str) -> Path:
    """Build `package` from a throwaway wrapper module whose go.mod is `go_mod` (pins and
    replaces), e.g. a release of kube-apiserver or MinIO fetched through the module proxy."""

    def build(output: Path) -> None:
        with tempfile.TemporaryDirectory(prefix=f"oomdump-{name}-") as tmp:
            work = Path(tmp)
            (work / "go.mod").write_text(go_mod)
            (work / "tools.go").write_text(
                f'//go:build tools\n\npackage tools\n\nimport _ "{package}"\n'
            )
            run_go(["mod", "tidy"], cwd=work)
            run_go(["build", "-trimpath", "-o", str(output), package], cwd=work)

    return cached_binary(name, key, build)
