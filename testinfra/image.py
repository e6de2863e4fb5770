"""Container images for the test node, built here from this repository and Debian packages.

No container registry is reachable, so nothing is pulled: the Python base is a Debian root
file system made by `mmdebstrap` from Debian packages, the pause image and the Go leak app
are static Go binaries in otherwise empty images, and the oomdump image is the repository's
own Dockerfile built by buildah against that base (`--build-arg PYTHON_IMAGE=...`). Each
image is kept as a docker-archive under ~/.cache/oomdump keyed by a hash of what went into
it, so a warm run only imports archives into the node's containerd.
"""

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from testinfra.gobuild import cached_binary, run_go, source_hash

REPO = Path(__file__).resolve().parents[1]
DEBIAN_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "passwd")
# The host's CA bundle and pip settings go into the base, so pip inside the build reaches
# the package index the same way the host's pip does.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_PIP_CONF = Path("/etc/pip.conf")

PAUSE_IMAGE = "oomdump.test/pause:1"
OOMDUMP_IMAGE = "oomdump.test/oomdump:node"
LEAK_IMAGE = "oomdump.test/go-memory-leak:node"
BASE_IMAGE = "localhost/oomdump-debian-base:node"
BUILD_TIMEOUT = 1800.0

# The pod sandbox's PID 1: sleeps until told to stop and reaps the orphans a shared PID
# namespace hands it.
_PAUSE_GO = """package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tsignals := make(chan os.Signal, 8)
\tsignal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
\tfor s := range signals {
\t\tif s != syscall.SIGCHLD {
\t\t\tos.Exit(0)
\t\t}
\t\tfor {
\t\t\tvar status syscall.WaitStatus
\t\t\tpid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
\t\t\tif pid <= 0 || err != nil {
\t\t\t\tbreak
\t\t\t}
\t\t}
\t}
}
"""


class ImageBuildError(RuntimeError):
    """An image step failed; the message carries the tool's output."""


def _run(args: list[str], timeout: float = BUILD_TIMEOUT, cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(
            args, capture_output=True, text=True, check=False, timeout=timeout, cwd=cwd
        )
    except subprocess.TimeoutExpired as error:
        raise ImageBuildError(f"{args[0]} timed out after {timeout:.0f}s") from error
    if result.returncode != 0:
        raise ImageBuildError(f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def tools_missing() -> list[str]:
    """The image tools (Debian packages) that are not installed."""
    return [tool for tool in ("mmdebstrap", "buildah") if shutil.which(tool) is None]


def _static_go(name: str, folder: Path) -> Path:
    def build(output: Path) -> None:
        run_go(
            ["build", "-trimpath", "-ldflags=-s -w", "-o", str(output), "."],
            cwd=folder,
            env={"CGO_ENABLED": "0"},
        )

    return cached_binary(f"{name}-static", source_hash(folder), build)


def pause_binary() -> Path:
    with tempfile.TemporaryDirectory(prefix="oomdump-pause-") as tmp:
        folder = Path(tmp)
        (folder / "go.mod").write_text("module oomdump.test/pause\n\ngo 1.22\n")
        (folder / "main.go").write_text(_PAUSE_GO)
        return _static_go("pause", folder)


def leak_binary() -> Path:
    """examples/go-memory-leak, static (CGO off): it runs in an image with no libc."""
    return _static_go("go-memory-leak", REPO / "examples" / "go-memory-leak")


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def _host_file(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def debian_base_tar() -> Path:
    """A Debian root file system with python3 and venv, as a tar (mmdebstrap, ~1 min cold)."""
    key = _digest(
        DEBIAN_SUITE.encode(),
        " ".join(BASE_PACKAGES).encode(),
        _host_file(HOST_CA_BUNDLE),
        _host_file(HOST_PIP_CONF),
    )

    def build(output: Path) -> None:
        hooks = [f'--customize-hook=upload {HOST_CA_BUNDLE} "/etc/ssl/certs/ca-certificates.crt"']
        if HOST_PIP_CONF.exists():
            hooks.append(f'--customize-hook=upload {HOST_PIP_CONF} "/etc/pip.conf"')
        _run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                "--format=tar",
                *hooks,
                DEBIAN_SUITE,
                str(output),
            ]
        )

    return cached_binary("debian-base.tar", key, build)


@contextmanager
def _buildah_storage() -> Iterator[list[str]]:
    """A private, throwaway buildah store (vfs: no mounts left behind): the host's own
    container storage is never touched."""
    with tempfile.TemporaryDirectory(prefix="oomdump-buildah-") as tmp:
        root = Path(tmp)
        prefix = [
            "buildah",
            f"--root={root / 'storage'}",
            f"--runroot={root / 'run'}",
            "--storage-driver=vfs",
        ]
        try:
            yield prefix
        finally:
            # vfs keeps plain folders; a failed build can leave its container's mount behind.
            subprocess.run([*prefix, "rm", "--all"], capture_output=True, check=False)


def _commit_scratch(
    buildah: list[str],
    image: str,
    files: list[tuple[Path, str]],
    entrypoint: str,
    user: str,
    output: Path,
) -> None:
    container = _run([*buildah, "from", "scratch"]).strip()
    for source, target in files:
        _run([*buildah, "copy", "--chmod=0755", container, str(source), target])
    _run([*buildah, "config", f"--entrypoint={entrypoint}", f"--user={user}", container])
    _run([*buildah, "commit", "--quiet", container, image])
    _run([*buildah, "push", image, f"docker-archive:{output}:{image}"])


def pause_archive() -> Path:
    """The sandbox image containerd starts every pod with (`sandbox_image`)."""
    binary = pause_binary()
    key = _digest(binary.read_bytes(), PAUSE_IMAGE.encode())

    def build(output: Path) -> None:
        with _buildah_storage() as buildah:
            _commit_scratch(
                buildah, PAUSE_IMAGE, [(binary, "/pause")], '["/pause"]', "65535:65535", output
            )

    return cached_binary("pause-image.tar", key, build)


def leak_archive() -> Path:
    """The Go leak app as distroless-static would carry it: one static binary, user 65532."""
    binary = leak_binary()
    key = _digest(binary.read_bytes(), LEAK_IMAGE.encode())

    def build(output: Path) -> None:
        with _buildah_storage() as buildah:
            _commit_scratch(
                buildah,
                LEAK_IMAGE,
                [(binary, "/go-memory-leak")],
                '["/go-memory-leak"]',
                "65532:65532",
                output,
            )

    return cached_binary("go-memory-leak-image.tar", key, build)


def _context_hash() -> bytes:
    """What the Dockerfile's build context holds (.dockerignore admits only these)."""
    digest = hashlib.sha256()
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        digest.update(name.encode() + (REPO / name).read_bytes())
    for package in ("oomdump", "webhook", "sidecar", "certs"):
        digest.update(source_hash(REPO / package).encode())
    return digest.digest()


def oomdump_archive() -> Path:
    """The repository's Dockerfile built on the Debian base (a few minutes cold: pip)."""
    base = debian_base_tar()
    key = _digest(_context_hash(), base.parent.name.encode(), OOMDUMP_IMAGE.encode())

    def build(output: Path) -> None:
        with _buildah_storage() as buildah:
            container = _run([*buildah, "from", "scratch"]).strip()
            _run([*buildah, "add", container, str(base), "/"])
            _run([*buildah, "commit", "--quiet", container, BASE_IMAGE])
            _run(
                [
                    *buildah,
                    "build",
                    "--isolation=chroot",
                    "--layers=false",
                    "--pull-never",
                    f"--build-arg=PYTHON_IMAGE={BASE_IMAGE}",
                    f"--tag={OOMDUMP_IMAGE}",
                    "--file=Dockerfile",
                    ".",
                ],
                cwd=REPO,
            )
            _run([*buildah, "push", OOMDUMP_IMAGE, f"docker-archive:{output}:{OOMDUMP_IMAGE}"])

    return cached_binary("oomdump-image.tar", key, build)


def all_archives() -> dict[str, Path]:
    """Every image the node needs, built or found in the cache."""
    return {
        PAUSE_IMAGE: pause_archive(),
        LEAK_IMAGE: leak_archive(),
        OOMDUMP_IMAGE: oomdump_archive(),
    }
