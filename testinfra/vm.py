"""A real cgroup v2 kernel in a QEMU guest, for tests this host's v1-only kernel cannot run.

    vm = prepare()                       # packages, kernel, modules: once, then cached
    result = run_in_guest(vm, "cat /sys/fs/cgroup/cgroup.controllers", out_dir, timeout=300)
    assert result.returncode == 0 and "memory" in result.stdout

The guest is a stock Debian kernel booted by virtme-ng under QEMU's software emulation (KVM
guests hang on this machine), with `cgroup_no_v1=all`, so cgroup2 on /sys/fs/cgroup has the
memory controller. Its root is the host's own filesystem, shared read-only over 9p, so the
repository, the venv and binaries in ~/.cache are there at the same paths; `out_dir` is
shared read-write, and is where the payload's output, exit code and files land. The payload
runs as root. Guest code runs ~60x slower than on the host: the guest is for correctness
against the real kernel, never for timing.

Set-up, each step skipped when already done: the Debian packages (installed with apt-get
when missing), the kernel package downloaded and unpacked into
`~/.cache/oomdump/kernel-<release>/` (keyed by release, file-locked like the Go builds), its
modules linked into /usr/lib/modules/<release> with `depmod`, and `vng` from the venv.
`vm_unavailable()` says why it cannot run here (not root, not x86-64 Linux, no apt-get to
install what is missing); a failing step of a set-up that can run raises instead, so CI
fails rather than skips.
"""

import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from testinfra import apt
from testinfra.gobuild import CACHE_ROOT, _locked
from testinfra.process import start_process, stop_process

# Debian 12's kernel ABI, pinned so a warm cache is reused; when Debian's index no longer
# carries it, the newest 6.1 ABI it does carry is taken (and cached under its own name).
KERNEL_RELEASE = "6.1.0-57-amd64"
# busybox-static: virtme-ng's initramfs needs a static busybox; kmod: depmod/modprobe.
APT_PACKAGES = ("qemu-system-x86", "kmod", "busybox-static")
GUEST_CMDLINE = "cgroup_no_v1=all"
MODULES_ROOT = Path("/usr/lib/modules")
_GUEST_DIR = ".guest"  # inside out_dir: the wrapper script, stdout, stderr, rc, console


class VmSetupError(RuntimeError):
    """A set-up step failed on a machine where it should work; the message says which."""


@dataclass(frozen=True)
class Vm:
    release: str
    vmlinuz: Path
    vng: Path


@dataclass(frozen=True)
class GuestResult:
    returncode: int  # the payload's exit code in the guest
    stdout: str
    stderr: str
    out_dir: Path  # shared with the guest: every file the payload wrote there
    console: str  # the kernel's and virtme's console, for diagnosing a failed boot
    seconds: float  # wall time from starting QEMU to its exit


def vm_unavailable() -> str | None:
    """Why the guest cannot run here, or None when it can (possibly after installing)."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return f"the cgroup v2 guest needs x86-64 Linux, not {sys.platform}/{platform.machine()}"
    if os.geteuid() != 0:
        return "the cgroup v2 guest needs root (apt-get, /usr/lib/modules, the guest as root)"
    missing = _missing_packages()
    if missing and shutil.which("apt-get") is None:
        return f"packages {', '.join(missing)} are missing and there is no apt-get to install them"
    if _vng() is None and not _can_pip():
        return "virtme-ng is not installed in the venv (pip install -e '.[test]')"
    return None


def _run(args: list[str], what: str, timeout: float = 600, cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(
            args,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    except subprocess.TimeoutExpired as error:
        raise VmSetupError(f"{what}: `{shlex.join(args)}` took over {timeout:.0f}s") from error
    if result.returncode != 0:
        raise VmSetupError(
            f"{what}: `{shlex.join(args)}` exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result.stdout


def _missing_packages() -> list[str]:
    return apt.missing(APT_PACKAGES)


def ensure_packages() -> None:
    """apt-get install the packages that are missing (apt-get update first, once)."""
    try:
        apt.ensure(APT_PACKAGES)
    except apt.AptError as error:
        raise VmSetupError(str(error)) from error


def _apt_knows(package: str) -> bool:
    policy = subprocess.run(
        ["apt-cache", "policy", package], capture_output=True, text=True, check=False
    ).stdout
    return "Candidate:" in policy and "Candidate: (none)" not in policy


def choose_release() -> str:
    """The pinned kernel release when cached or in apt's index, else the newest 6.1 one."""
    if _kernel_folder(KERNEL_RELEASE).joinpath(".complete").exists():
        return KERNEL_RELEASE
    if not _apt_knows(f"linux-image-{KERNEL_RELEASE}"):
        _run(["apt-get", "update", "-q"], "apt-get update")
    if _apt_knows(f"linux-image-{KERNEL_RELEASE}"):
        return KERNEL_RELEASE
    names = _run(["apt-cache", "pkgnames", "linux-image-6.1.0-"], "listing kernel packages")
    abis = sorted(
        int(name.split("-")[3])
        for name in names.split()
        if name.startswith("linux-image-6.1.0-")
        and name.endswith("-amd64")
        and name.split("-")[3].isdigit()
        and name.count("-") == 4
    )
    if not abis:
        raise VmSetupError("apt knows no linux-image-6.1.0-<abi>-amd64 package")
    return f"6.1.0-{abis[-1]}-amd64"


def _kernel_folder(release: str) -> Path:
    return CACHE_ROOT / f"kernel-{release}"


def ensure_kernel(release: str) -> Path:
    """The unpacked kernel package for `release` in the cache (downloaded once): its
    `boot/vmlinuz-<release>` and `modules/<release>/`."""
    folder = _kernel_folder(release)
    done = folder / ".complete"
    if done.exists():
        return folder
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with _locked(CACHE_ROOT / f".kernel-{release}.lock"):
        if done.exists():
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="oomdump-kernel-", dir=CACHE_ROOT) as tmp:
            # apt-get download writes into its working folder, as its sandbox user when it can.
            os.chmod(tmp, 0o755)
            _run(
                ["apt-get", "download", "-q", f"linux-image-{release}"],
                f"downloading the kernel {release}",
                cwd=Path(tmp),
            )
            debs = sorted(Path(tmp).glob("linux-image-*.deb"))
            if not debs:
                raise VmSetupError(f"apt-get download linux-image-{release} produced no .deb")
            unpacked = Path(tmp) / "root"
            _run(["dpkg", "-x", str(debs[0]), str(unpacked)], "unpacking the kernel")
            folder.mkdir(parents=True)
            (unpacked / "boot").rename(folder / "boot")
            (unpacked / "lib" / "modules").rename(folder / "modules")
        done.write_text(debs[0].name + "\n")
    return folder


def install_modules(release: str, kernel: Path) -> None:
    """/usr/lib/modules/<release> -> the cached modules (the guest's root is this host's
    filesystem, so the guest's modprobe finds them there), with their depmod index."""
    target = kernel / "modules" / release
    link = MODULES_ROOT / release
    if link.is_symlink() and link.resolve() == target.resolve():
        if (target / "modules.dep").exists():
            return
    elif link.exists() or link.is_symlink():
        if not link.is_symlink() and (link / "modules.dep").exists():
            return  # installed by the distribution itself: use it as it is
        link.unlink()
    MODULES_ROOT.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(target)
    with _locked(CACHE_ROOT / f".kernel-{release}.lock"):
        if not (target / "modules.dep").exists():
            _run(["depmod", release], f"depmod {release}")


def _vng() -> Path | None:
    candidate = Path(sys.executable).parent / "vng"
    return candidate if candidate.exists() else None


def _can_pip() -> bool:
    return (Path(sys.executable).parent / "pip").exists()


def ensure_vng() -> Path:
    """`vng` beside this Python (the venv), installed with pip when missing."""
    found = _vng()
    if found is None:
        _run([sys.executable, "-m", "pip", "install", "-q", "virtme-ng"], "pip install virtme-ng")
        found = _vng()
    if found is None:
        raise VmSetupError(f"pip installed virtme-ng but there is no vng beside {sys.executable}")
    return found


def prepare() -> Vm:
    """Everything the guest needs, installed or found in the cache."""
    ensure_packages()
    release = choose_release()
    kernel = ensure_kernel(release)
    install_modules(release, kernel)
    vmlinuz = kernel / "boot" / f"vmlinuz-{release}"
    if not vmlinuz.is_file():
        raise VmSetupError(f"{vmlinuz} is missing from the unpacked kernel package")
    return Vm(release=release, vmlinuz=vmlinuz, vng=ensure_vng())


# The part of a run's timeout kept for booting and powering off; the payload gets the rest.
BOOT_ALLOWANCE = 90.0


class GuestFailed(RuntimeError):
    """The guest did not run the payload to its end (boot failure or timeout); the message
    carries the console's tail. The payload's files stay in out_dir."""


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(nothing written)"


def run_in_guest(
    vm: Vm,
    payload: str,
    out_dir: Path,
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    memory: str = "2G",
    cpus: int = 2,
    boot_allowance: float = BOOT_ALLOWANCE,
) -> GuestResult:
    """Boot the guest, run the shell command `payload` as root with `env` in `out_dir`
    (shared read-write), power off. The payload is killed inside the guest after
    `timeout - boot_allowance` seconds, and QEMU on the host after `timeout`; QEMU never
    outlives this call. GuestFailed when the payload did not finish."""
    if timeout <= boot_allowance:
        raise ValueError(f"timeout {timeout}s leaves the payload no time after booting")
    out_dir = out_dir.resolve()
    guest = out_dir / _GUEST_DIR
    guest.mkdir(parents=True, exist_ok=True)
    for name in ("stdout", "stderr", "rc", "console.log"):
        (guest / name).unlink(missing_ok=True)
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in (env or {}).items())
    (guest / "payload.sh").write_text(exports + payload + "\n")
    q = shlex.quote
    (guest / "wrapper.sh").write_text(
        f"cd {q(str(out_dir))}\n"
        f"timeout -s KILL {int(timeout - boot_allowance)} sh {q(str(guest / 'payload.sh'))}"
        f" >{q(str(guest / 'stdout'))} 2>{q(str(guest / 'stderr'))} </dev/null\n"
        f"echo $? >{q(str(guest / 'rc.partial'))} && mv {q(str(guest / 'rc.partial'))}"
        f" {q(str(guest / 'rc'))}\n"
    )
    args = [
        str(vm.vng),
        "--verbose",
        "--disable-kvm",  # KVM guests hang on this machine; TCG emulation works
        "--force-9p",
        "--run",
        str(vm.vmlinuz),
        "--memory",
        memory,
        "--cpus",
        str(cpus),
        "--append",
        GUEST_CMDLINE,
        "--rwdir",
        str(out_dir),
        "--",
        f"sh {q(str(guest / 'wrapper.sh'))}",
    ]
    path = f"{vm.vng.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    console = guest / "console.log"
    started = time.monotonic()
    process = start_process(args, console, env={**os.environ, "PATH": path}, cwd=out_dir)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise GuestFailed(
            f"the guest ran over {timeout:.0f}s and was killed; console:\n{_tail(console)}"
        ) from None
    finally:
        stop_process(process, grace=0)
    seconds = time.monotonic() - started
    rc_file = guest / "rc"
    if not rc_file.exists():
        raise GuestFailed(
            f"the guest exited ({process.returncode}) without running the payload to its end;"
            f" console:\n{_tail(console)}"
        )
    return GuestResult(
        returncode=int(rc_file.read_text().strip()),
        stdout=(guest / "stdout").read_text(errors="replace"),
        stderr=(guest / "stderr").read_text(errors="replace"),
        out_dir=out_dir,
        console=console.read_text(errors="replace"),
        seconds=seconds,
    )


def run_python_in_guest(
    vm: Vm,
    script: Path,
    script_args: list[str],
    out_dir: Path,
    *,
    timeout: float,
    env: dict[str, str] | None = None,
) -> GuestResult:
    """`run_in_guest` for a Python script, run by this venv's Python (the host's root is
    the guest's, so the venv and the repository are there at the same paths)."""
    repo = Path(__file__).resolve().parents[1]
    command = shlex.join([sys.executable, str(script), *script_args])
    full_env = {"PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    return run_in_guest(vm, command, out_dir, timeout=timeout, env=full_env)
