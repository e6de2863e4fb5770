"""testinfra.vm itself: a shell payload's exit code, output and files come back from the
guest, and a guest that overruns its timeout is killed with its QEMU."""

import os
from pathlib import Path

import pytest

from testinfra import vm

pytestmark = pytest.mark.v2


@pytest.fixture(scope="module")
def machine() -> vm.Vm:
    reason = vm.vm_unavailable()
    if reason is not None:
        pytest.skip(reason)
    return vm.prepare()


def _qemu_pids_for(folder: Path) -> list[int]:
    """QEMU processes whose command line names `folder` (its shared directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0] and any(os.fsencode(folder) in a for a in argv):
            found.append(int(entry.name))
    return found


def test_a_payload_runs_as_root_and_returns_code_output_and_files(machine, tmp_path):
    payload = "id -u; head -c 6 /sys/fs/cgroup/cgroup.controllers >&2; echo made > f.txt; exit 3"
    result = vm.run_in_guest(machine, payload, tmp_path, timeout=300)
    assert result.returncode == 3
    assert result.stdout == "0\n"
    assert result.stderr == "cpuset"  # cgroup2 at /sys/fs/cgroup, the guest's own kernel
    assert (tmp_path / "f.txt").read_text() == "made\n"
    assert machine.release in result.console  # the console is the guest kernel's


def test_a_guest_over_its_timeout_is_killed_with_its_qemu(machine, tmp_path):
    # The guest kills the payload 19 s after it starts (timeout - boot_allowance), the host
    # kills QEMU 20 s after it starts: a boot always takes over the 1 s between them (~8 s
    # here, quiet), so the host's deadline is the one that ends it, however fast the boot.
    with pytest.raises(vm.GuestFailed, match="ran over 20s"):
        vm.run_in_guest(machine, "sleep 600", tmp_path, timeout=20, boot_allowance=1)
    assert _qemu_pids_for(tmp_path) == []
