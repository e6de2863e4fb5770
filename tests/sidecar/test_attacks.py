"""Play the compromised app against the real watcher (`python -m sidecar`, its defaults).

Each test is an attack from issue 10, done for real: a process in a real cgroup v1 group
that chroots into a folder it planted with symlinks and FIFOs, endpoints that send a gzip
bomb or drip their answer, a socket bound to an address the pod does not own.
"""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from sidecar import cgroup, cgroupfs, ports
from testinfra.cgroups import MemoryCgroup, MiB, memory_cgroup
from testinfra.watcher_process import PodView, WatcherProcess
from tests.sidecar.proctree import (
    V1_CGROUP_FILE,
    V1_MOUNTINFO,
    FakeProcess,
    v1_memory_files,
    write_process,
)
from tests.sidecar.servers import read_port, stop

HERE = Path(__file__).resolve().parent
ATTACKER = HERE / "attacker.py"


@contextmanager
def attacker(group: MemoryCgroup, fake_root: Path, *victims: Path) -> Iterator[tuple]:
    process = group.spawn(
        [sys.executable, str(ATTACKER), str(fake_root), *map(str, victims)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, read_port(process, "listening")
    finally:
        stop(process)


def tell(process: subprocess.Popen, command: str, answer: str) -> None:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(command + "\n")
    process.stdin.flush()
    line = process.stdout.readline()
    assert line.strip() == answer, f"the attacker said {line!r} to {command!r}"


@pytest.mark.cgroup
@pytest.mark.usefixtures("cgroup_v1")
@pytest.mark.parametrize("brake", ["false", "true"])
def test_chroot_into_planted_links_and_fifos_reaches_nothing(tmp_path: Path, brake: str) -> None:
    """After being watched, the app chroots into a folder where every cgroup file the
    watcher could reopen is a symlink to a file of the watcher's root or a FIFO, then
    crosses its threshold: the watcher keeps using the real group through the descriptors
    it holds (events, capture, brake on and off), writes nothing outside it, and still
    stops on SIGTERM."""
    victims = [tmp_path / "victim-control", tmp_path / "victim-limit"]
    victims[0].write_text("oom_kill_disable 0\nunder_oom 0\n")
    victims[1].write_text("12345\n")
    before = {victim: victim.read_text() for victim in victims}
    (tmp_path / "proc").mkdir()
    view = PodView(tmp_path / "proc")
    with ExitStack() as stack:
        group = stack.enter_context(memory_cgroup(256 * MiB))
        app, port = stack.enter_context(attacker(group, tmp_path / "fake", *victims))
        view.add(app.pid)
        watcher = stack.enter_context(
            WatcherProcess(
                {
                    "PROC_ROOT": view.proc_root,
                    "DUMP_DIR": str(tmp_path / "dumps"),
                    "CRITICAL": "50",
                    "EMERGENCY_BRAKE": brake,
                    "FETCH_TIMEOUT": "2s",
                }
            )
        )
        watcher.log.wait_for_all("event=ports", f"pid={app.pid} ", f":{port}")
        watcher.log.wait_for_all("event=detector-mode", "mode=events")
        tell(app, "chroot", "chrooted")
        tell(app, "leak 160", "leaked")  # 160 of 256 MiB: over the 50% threshold
        watcher.log.wait_for_all("event=fetch-failed", f"pid={app.pid} ", "reason=not-http")
        if brake == "true":
            watcher.log.wait_for_all("event=brake-engaged", f"cgroup=/{group.name}")
            watcher.log.wait_for_all("event=brake-released", f"cgroup=/{group.name}")
        stopped_on_sigterm = watcher.stop(deadline=20)
        control, limit = group.oom_control(), group.limit_bytes
    assert stopped_on_sigterm, "SIGTERM did not stop the watcher:\n" + "\n".join(
        watcher.log.lines[-30:]
    )
    assert {victim: victim.read_text() for victim in victims} == before
    assert control["oom_kill_disable"] == 0 and limit == 256 * MiB  # the real group restored
    assert not watcher.log.matching("level=error")


def test_a_prepared_tree_is_not_a_cgroup_filesystem(tmp_path: Path) -> None:
    """Without the tests' allowance, a folder on any other filesystem is refused: what an
    app's own files can never pass for."""
    assert cgroupfs.ACCEPTED_FILESYSTEMS == cgroupfs.CGROUP_FILESYSTEMS
    files = v1_memory_files("/sys/fs/cgroup/memory", 10 * MiB, 64 * MiB)
    write_process(
        tmp_path, FakeProcess(7, "app", cgroup=V1_CGROUP_FILE, mountinfo=V1_MOUNTINFO, files=files)
    )
    with pytest.raises(cgroup.CgroupError, match="not on a cgroup filesystem"):
        cgroup.resolve(tmp_path, 7)


def test_a_symlink_on_the_way_to_the_cgroup_is_refused(
    tmp_path: Path, prepared_cgroup_trees: None
) -> None:
    """A link anywhere between the process's root and its cgroup folder is not followed,
    even one that points at a real cgroup folder."""
    files = v1_memory_files("/elsewhere", 10 * MiB, 64 * MiB)
    base = write_process(
        tmp_path, FakeProcess(7, "app", cgroup=V1_CGROUP_FILE, mountinfo=V1_MOUNTINFO, files=files)
    )
    (base / "root/sys/fs/cgroup").mkdir(parents=True)
    (base / "root/sys/fs/cgroup/memory").symlink_to(base / "root/elsewhere")
    with pytest.raises(cgroup.CgroupError, match="unsafe"):
        cgroup.resolve(tmp_path, 7)


def test_fifo_and_symlink_files_in_a_held_folder_are_refused(
    tmp_path: Path, prepared_cgroup_trees: None
) -> None:
    """Files are opened beneath the held folder only if they are regular files reached
    without a link, and never block (a FIFO would)."""
    (tmp_path / "outside").write_text("secret\n")
    os.mkfifo(tmp_path / "memory.usage_in_bytes")
    (tmp_path / "memory.oom_control").symlink_to(tmp_path / "outside")
    folder = cgroupfs.CgroupDir.at(tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(OSError, match="not a regular file"):
            folder.open("memory.usage_in_bytes")
        assert time.monotonic() - started < 5, "opening the FIFO blocked"
        with pytest.raises(OSError):
            folder.write("memory.oom_control", "1")
        with pytest.raises(OSError, match="plain file name"):
            folder.open("../outside")
    finally:
        folder.close()
    assert (tmp_path / "outside").read_text() == "secret\n"


FREEBIND_LISTENER = """
import socket, sys
def listen(host, freebind):
    s = socket.socket()
    if freebind:
        s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND (linux/in.h)
    s.bind((host, 0))
    s.listen(1)
    return s
off_pod = listen("203.0.113.7", True)  # TEST-NET-3: an address nobody here owns
own = listen("127.0.0.1", False)
print(off_pod.getsockname()[1], own.getsockname()[1], flush=True)
sys.stdin.read()
"""


@contextmanager
def network_namespace() -> Iterator[str]:
    """A network namespace of the test's own, with only loopback up; always removed."""
    name = f"oomdump-t{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_a_listener_bound_off_pod_with_ip_freebind_is_never_an_endpoint() -> None:
    """The app binds a socket to an address its network namespace does not own
    (IP_FREEBIND) and listens: it shows in net/tcp, but the watcher never connects there."""
    with network_namespace() as namespace:
        app = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", FREEBIND_LISTENER],
            start_new_session=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert app.stdout is not None
            off_pod_port, own_port = map(int, app.stdout.readline().split())
            pid = app.pid  # `ip netns exec` execs the program: the same process
            listed = {row.port for row in ports.read_tcp_tables(Path("/proc"), pid)}
            assert {off_pod_port, own_port} <= listed  # the kernel shows both
            expected = [ports.Endpoint(own_port, "127.0.0.1")]
            assert ports.discover(Path("/proc"), pid) == expected
            finder = ports.PortFinder(Path("/proc"))
            finder.find("app", pid)  # a new inode set is trusted at the second look
            assert finder.find("app", pid) == expected
        finally:
            stop(app)
