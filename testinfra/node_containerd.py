"""containerd (Debian's 1.6) for the test node, with every path inside one work folder.

Its root, state, socket, runc root and CNI folders live under `workdir`, so it shares
nothing with any other containerd on the machine. Stopping it is not enough to clean up:
shims and containers outlive containerd on purpose, so `cleanup` kills the shims that serve
this socket and everything in the node's cgroups, then unmounts what is left under the work
folder (rootfs overlays, /dev/shm of sandboxes, volumes) and the network namespaces
created meanwhile.
"""

import os
import signal
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from testinfra.node_net import CNI_BIN_DIR, PodNetwork
from testinfra.process import start_process, stop_process, wait_until

READY_TIMEOUT = 30.0
NETNS_DIR = Path("/run/netns")


class ContainerdError(RuntimeError):
    """A containerd step failed; the message carries the tool's output."""


def _config(workdir: Path, network: PodNetwork, sandbox_image: str) -> str:
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    runc = '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]'
    return f"""version = 2
root = "{workdir}/root"
state = "{workdir}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{workdir}/containerd.sock"

[ttrpc]
  address = "{workdir}/containerd-ttrpc.sock"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{workdir}/opt"

{cri}
  sandbox_image = "{sandbox_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # This machine's root lacks CAP_SYS_RESOURCE, so no process may lower its oom_score_adj:
  # the sandbox's -998 would fail runc's start ("can't get final child's PID from pipe").
  # Scores are clamped at containerd's own instead; the app's positive scores still apply.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    {runc}
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{workdir}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{network.conf_dir}"
    max_conf_num = 1
"""


@dataclass
class Containerd:
    workdir: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd.sock"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def ctr(self, *args: str, timeout: float = 300.0) -> str:
        result = subprocess.run(
            ["ctr", f"--address={self.socket}", "--namespace=k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise ContainerdError(f"ctr {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def import_image(self, archive: Path) -> None:
        """Import a docker-archive into the CRI's namespace, its layers unpacked for overlayfs."""
        self.ctr("images", "import", "--no-unpack=false", "--snapshotter=overlayfs", str(archive))


def start_containerd(workdir: Path, network: PodNetwork, sandbox_image: str) -> Containerd:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.toml"
    config.write_text(_config(workdir, network, sandbox_image))
    log = workdir / "containerd.log"
    process = start_process(["containerd", f"--config={config}"], log)
    running = Containerd(workdir, process, log)
    try:
        wait_until(
            lambda: _serving(running),
            what="containerd",
            timeout=READY_TIMEOUT,
            process=process,
            log_path=log,
        )
    except BaseException:
        stop_process(process)
        raise
    return running


def _serving(running: Containerd) -> bool:
    if not running.socket.exists():
        return False
    try:
        running.ctr("version", timeout=5)
    except (ContainerdError, subprocess.TimeoutExpired):
        return False
    return True


def netns_snapshot() -> set[str]:
    return set(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else set()


def _shim_pids(socket: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            shim = argv[0].endswith(b"containerd-shim-runc-v2")
            if shim and str(socket).encode() in argv:
                pids.append(int(entry.name))
    return pids


def _mounts_below(folder: Path) -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == str(folder) or point.startswith(f"{folder}/"):
                points.append(point)
    # Deepest first, so a parent is unmounted after what is mounted inside it.
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def kill_shims(socket: Path) -> None:
    for pid in _shim_pids(socket):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def unmount_below(folder: Path) -> None:
    for _ in range(3):
        points = _mounts_below(folder)
        if not points:
            return
        for point in points:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        time.sleep(0.1)


def remove_new_netns(before: set[str]) -> None:
    """Unmount and remove the network namespaces containerd made (`cni-*`) since `before`."""
    for name in sorted(netns_snapshot() - before):
        if not name.startswith("cni-"):
            continue
        path = NETNS_DIR / name
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
        with suppress(OSError):
            path.unlink()
