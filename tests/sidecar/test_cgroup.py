"""Memory cgroup resolution and sampling on trees modelled on real Kubernetes nodes."""

import os
from pathlib import Path

import pytest

from sidecar import cgroup
from tests.cgroup_watch import group_at
from tests.sidecar.proctree import (
    V1_CGROUP_FILE,
    V1_CONTAINER,
    V1_MOUNTINFO,
    V2_HOST_CGROUP_FILE,
    V2_HOST_MOUNTINFO,
    V2_NS_CGROUP_FILE,
    V2_NS_MOUNTINFO,
    V2_NS_SELF_CGROUP_FILE,
    V2_NS_SELF_MOUNTINFO,
    V2_SCOPE,
    FakeProcess,
    v1_memory_files,
    v2_memory_files,
    write_process,
)

MiB = 1024 * 1024
# Prepared trees live on tmp_path's filesystem (this kernel has no v2 memory controller).
pytestmark = pytest.mark.usefixtures("prepared_cgroup_trees")


def folder_path(resolved: cgroup.MemoryCgroup) -> Path:
    """Where the held folder is (the test's view of it; the watcher never uses paths)."""
    return Path(os.readlink(f"/proc/self/fd/{resolved.folder._fd}"))


def sample_now(resolved: cgroup.MemoryCgroup, metric: str) -> cgroup.MemorySample:
    sampler = cgroup.Sampler(resolved, metric)  # type: ignore[arg-type]
    try:
        return sampler.sample(sampler.limit())
    finally:
        sampler.close()


def read_limit(resolved: cgroup.MemoryCgroup) -> int | None:
    sampler = cgroup.Sampler(resolved, "usage")
    try:
        return sampler.limit()
    finally:
        sampler.close()


def test_v1_kubernetes_container(tmp_path: Path) -> None:
    files = v1_memory_files("/sys/fs/cgroup/memory", 300 * MiB, 512 * MiB, 100 * MiB)
    write_process(
        tmp_path, FakeProcess(7, "app", cgroup=V1_CGROUP_FILE, mountinfo=V1_MOUNTINFO, files=files)
    )
    resolved = cgroup.resolve(tmp_path, 7)
    assert resolved.version == 1
    assert resolved.path == V1_CONTAINER
    assert folder_path(resolved) == tmp_path / "7/root/sys/fs/cgroup/memory"
    working_set = sample_now(resolved, "working_set")
    assert working_set.usage_bytes == 200 * MiB
    assert working_set.limit_bytes == 512 * MiB
    assert sample_now(resolved, "usage").usage_bytes == 300 * MiB


def test_v1_plain_host_mount_of_the_whole_hierarchy(tmp_path: Path) -> None:
    mountinfo = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    directory = "/sys/fs/cgroup/memory/oomdump-test-1"
    write_process(
        tmp_path,
        FakeProcess(
            9,
            "app",
            cgroup="4:memory:/oomdump-test-1\n0::/\n",
            mountinfo=mountinfo,
            files=v1_memory_files(directory, 10 * MiB, 64 * MiB),
        ),
    )
    resolved = cgroup.resolve(tmp_path, 9)
    assert folder_path(resolved) == tmp_path / "9/root" / directory.lstrip("/")
    assert sample_now(resolved, "working_set").percent() == pytest.approx(100 * 10 / 64)


def test_v1_unlimited_counts_as_no_limit(tmp_path: Path) -> None:
    files = v1_memory_files("/sys/fs/cgroup/memory", 10 * MiB, 9223372036854771712)
    write_process(
        tmp_path, FakeProcess(7, "app", cgroup=V1_CGROUP_FILE, mountinfo=V1_MOUNTINFO, files=files)
    )
    assert read_limit(cgroup.resolve(tmp_path, 7)) is None


def test_v1_parent_limit_binds_when_own_is_unlimited(tmp_path: Path) -> None:
    files = v1_memory_files("/sys/fs/cgroup/memory", 10 * MiB, 9223372036854771712)
    files["/sys/fs/cgroup/memory/memory.stat"] = "hierarchical_memory_limit 268435456\n"
    write_process(
        tmp_path, FakeProcess(7, "app", cgroup=V1_CGROUP_FILE, mountinfo=V1_MOUNTINFO, files=files)
    )
    assert read_limit(cgroup.resolve(tmp_path, 7)) == 256 * MiB


@pytest.mark.parametrize(
    ("cgroup_file", "mountinfo", "directory"),
    [
        (V2_NS_CGROUP_FILE, V2_NS_MOUNTINFO, "/sys/fs/cgroup"),
        (V2_NS_SELF_CGROUP_FILE, V2_NS_SELF_MOUNTINFO, "/sys/fs/cgroup"),
        (V2_HOST_CGROUP_FILE, V2_HOST_MOUNTINFO, f"/sys/fs/cgroup{V2_SCOPE}"),
    ],
    ids=["cgroupns-seen-from-sidecar", "cgroupns-root-0::/", "no-cgroupns"],
)
def test_v2_kubernetes_container(
    tmp_path: Path, cgroup_file: str, mountinfo: str, directory: str
) -> None:
    files = v2_memory_files(directory, 400 * MiB, str(1024 * MiB), inactive_file=50 * MiB)
    write_process(
        tmp_path, FakeProcess(12, "app", cgroup=cgroup_file, mountinfo=mountinfo, files=files)
    )
    resolved = cgroup.resolve(tmp_path, 12)
    assert resolved.version == 2
    assert folder_path(resolved) == tmp_path / "12/root" / directory.lstrip("/")
    sample = sample_now(resolved, "working_set")
    assert (sample.usage_bytes, sample.raw_usage_bytes) == (350 * MiB, 400 * MiB)
    assert sample.limit_bytes == 1024 * MiB


def test_v2_limit_max_is_no_limit(tmp_path: Path) -> None:
    files = v2_memory_files("/sys/fs/cgroup", 400 * MiB, "max")
    write_process(
        tmp_path,
        FakeProcess(12, "app", cgroup=V2_NS_CGROUP_FILE, mountinfo=V2_NS_MOUNTINFO, files=files),
    )
    resolved = cgroup.resolve(tmp_path, 12)
    assert read_limit(resolved) is None
    assert sample_now(resolved, "usage").percent() is None


def test_working_set_never_negative(tmp_path: Path) -> None:
    files = v2_memory_files("/sys/fs/cgroup", 10 * MiB, "max")
    files["/sys/fs/cgroup/memory.stat"] = f"inactive_file {20 * MiB}\n"
    write_process(
        tmp_path,
        FakeProcess(12, "app", cgroup=V2_NS_CGROUP_FILE, mountinfo=V2_NS_MOUNTINFO, files=files),
    )
    assert sample_now(cgroup.resolve(tmp_path, 12), "working_set").usage_bytes == 0


def test_no_memory_mount_is_a_clear_error(tmp_path: Path) -> None:
    mountinfo = "1 0 0:1 / / rw - overlay overlay rw\n"
    write_process(tmp_path, FakeProcess(5, "app", cgroup=V1_CGROUP_FILE, mountinfo=mountinfo))
    with pytest.raises(cgroup.CgroupError, match="no cgroup v1 memory mount"):
        cgroup.resolve(tmp_path, 5)


def test_missing_memory_files_is_a_clear_error(tmp_path: Path) -> None:
    base = write_process(
        tmp_path, FakeProcess(5, "app", cgroup=V2_HOST_CGROUP_FILE, mountinfo=V2_HOST_MOUNTINFO)
    )
    (base / "root").mkdir()
    with pytest.raises(cgroup.CgroupError, match=r"does not exist in the process's root"):
        cgroup.resolve(tmp_path, 5)
    (base / "root" / "sys/fs/cgroup" / V2_SCOPE.lstrip("/")).mkdir(parents=True)
    with pytest.raises(cgroup.CgroupError, match=r"memory\.current is missing"):
        cgroup.resolve(tmp_path, 5)


def test_vanished_process_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        cgroup.resolve(tmp_path, 4242)


def test_unreadable_cgroup_file_is_a_clear_error(tmp_path: Path) -> None:
    base = write_process(
        tmp_path, FakeProcess(5, "app", cgroup=V1_CGROUP_FILE, mountinfo=V1_MOUNTINFO)
    )
    (base / "cgroup").unlink()
    (base / "cgroup").mkdir()  # reading a directory fails like an unreadable file would
    with pytest.raises(cgroup.CgroupError, match=r"cannot read .*/5/cgroup: Is a directory"):
        cgroup.resolve(tmp_path, 5)


def test_mountinfo_octal_escapes() -> None:
    line = r"40 31 0:38 / /mnt/with\040space rw - cgroup2 cgroup2 rw" + "\n"
    (mount,) = cgroup.parse_mountinfo(line)
    assert mount.mount_point == "/mnt/with space"


def test_this_machine_resolves_own_cgroup() -> None:
    """The real /proc: the v1 memory controller of this very process."""
    own = Path("/proc/self/cgroup").read_text()
    if ":memory:" not in own:
        pytest.skip("this machine has no cgroup v1 memory controller")
    import os

    resolved = cgroup.resolve(Path("/proc"), os.getpid())
    assert resolved.version == 1
    assert sample_now(resolved, "usage").raw_usage_bytes > 0


def resolved_300_of_512(root: Path, version: int) -> cgroup.MemoryCgroup:
    """Process 7 in a cgroup of the given version: 300 MiB used, 512 MiB limit, 100 MiB
    inactive file pages."""
    if version == 1:
        files = v1_memory_files("/sys/fs/cgroup/memory", 300 * MiB, 512 * MiB, 100 * MiB)
        process = FakeProcess(7, "app", cgroup=V1_CGROUP_FILE, mountinfo=V1_MOUNTINFO, files=files)
    else:
        files = v2_memory_files("/sys/fs/cgroup", 300 * MiB, str(512 * MiB), 100 * MiB)
        process = FakeProcess(
            7, "app", cgroup=V2_NS_CGROUP_FILE, mountinfo=V2_NS_MOUNTINFO, files=files
        )
    write_process(root, process)
    return cgroup.resolve(root, 7)


@pytest.mark.parametrize("version", [1, 2])
def test_sampler_reads_the_metric_and_follows_changes(tmp_path: Path, version: int) -> None:
    resolved = resolved_300_of_512(tmp_path, version)
    for metric in ("working_set", "usage"):
        sampler = cgroup.Sampler(resolved, metric)
        try:
            expected = 200 * MiB if metric == "working_set" else 300 * MiB
            assert sampler.sample(512 * MiB).usage_bytes == expected
            assert sampler.limit() == 512 * MiB
        finally:
            sampler.close()
    sampler = cgroup.Sampler(resolved, "working_set")
    try:
        usage_file = "memory.usage_in_bytes" if version == 1 else "memory.current"
        (folder_path(resolved) / usage_file).write_text(f"{400 * MiB}\n")  # same file, new text
        assert sampler.sample(512 * MiB).usage_bytes == 300 * MiB
    finally:
        sampler.close()


def test_sampler_of_a_real_v1_cgroup_and_its_removal() -> None:
    """A real cgroup v1 group: the open files do not keep it from being removed, and a
    sample afterwards is an OSError (the watcher's sign that the process is gone)."""
    root = Path("/sys/fs/cgroup/memory")
    if not (root / "memory.usage_in_bytes").exists():
        pytest.skip("this machine has no cgroup v1 memory controller")
    directory = root / f"oomdump-test-sampler-{os.getpid()}"
    directory.mkdir()
    try:
        (directory / "memory.limit_in_bytes").write_text(str(64 * MiB))
        group = group_at(directory, 1)
        sampler = cgroup.Sampler(group, "working_set")
        try:
            assert sampler.sample(64 * MiB).limit_bytes == sampler.limit() == 64 * MiB
            directory.rmdir()
            with pytest.raises(OSError):
                sampler.sample(64 * MiB)
        finally:
            sampler.close()
    finally:
        if directory.exists():
            directory.rmdir()


@pytest.mark.parametrize("version", [1, 2])
def test_sampler_reads_memory_stat_only_at_or_over_the_threshold(
    tmp_path: Path, version: int
) -> None:
    """Below the threshold raw usage decides (the working set cannot exceed it), so
    memory.stat is not read: a garbled memory.stat goes unnoticed there, and the counter of
    memory.stat reads stays put. At or over it the working set is computed as before."""
    inactive_key = "total_inactive_file" if version == 1 else "inactive_file"
    resolved = resolved_300_of_512(tmp_path, version)
    usage_file = folder_path(resolved) / (
        "memory.usage_in_bytes" if version == 1 else "memory.current"
    )
    stat_file = folder_path(resolved) / "memory.stat"
    good_stat = stat_file.read_text()
    threshold = 358 * MiB
    sampler = cgroup.Sampler(resolved, "working_set")
    try:
        stat_file.write_text(good_stat.replace(f"{inactive_key} ", f"{inactive_key} garbled"))
        below = sampler.sample(512 * MiB, threshold)
        assert (below.usage_bytes, below.raw_usage_bytes) == (300 * MiB, 300 * MiB)
        assert below.inactive_file_bytes is None
        assert sampler.stat_reads == 0
        with pytest.raises(ValueError):  # proof that the garbled file is read when due
            sampler.sample(512 * MiB, None)
        assert sampler.stat_reads == 1

        stat_file.write_text(good_stat)
        usage_file.write_text(f"{400 * MiB}\n")  # raw usage over, working set (300) not
        crossed_raw = sampler.sample(512 * MiB, threshold)
        assert crossed_raw.usage_bytes == 300 * MiB < threshold
        assert crossed_raw.inactive_file_bytes == 100 * MiB
        usage_file.write_text(f"{threshold}\n")  # exactly at the threshold: read too
        assert sampler.sample(512 * MiB, threshold).inactive_file_bytes == 100 * MiB
        usage_file.write_text(f"{500 * MiB}\n")
        over = sampler.sample(512 * MiB, threshold)
        assert over.usage_bytes == 400 * MiB >= threshold
        assert sampler.stat_reads == 4
    finally:
        sampler.close()

    usage_sampler = cgroup.Sampler(resolved, "usage")  # same rule with MEMORY_METRIC=usage
    try:
        usage_file.write_text(f"{300 * MiB}\n")
        below = usage_sampler.sample(512 * MiB, threshold)
        assert (below.usage_bytes, below.inactive_file_bytes) == (300 * MiB, None)
        assert usage_sampler.stat_reads == 0
    finally:
        usage_sampler.close()


def test_a_group_outside_the_watchers_namespace_is_never_taken_for_another(
    tmp_path: Path,
) -> None:
    """`0::/../host` under a mount whose root is `/../..` (as a real 6.1 kernel showed it in
    tests/v2): dropping the `..` would name /sys/fs/cgroup/host, a decoy with another limit.
    The group is refused, with the reason, instead."""
    mountinfo = (
        "29 23 0:26 /../.. /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 "
        "rw,nsdelegate\n"
    )
    decoy = v2_memory_files("/sys/fs/cgroup/host", 10 * MiB, str(2 * 128 * MiB))
    write_process(
        tmp_path, FakeProcess(7, "app", cgroup="0::/../host\n", mountinfo=mountinfo, files=decoy)
    )
    with pytest.raises(cgroup.CgroupError, match="outside every cgroup2 mount"):
        cgroup.resolve(tmp_path, 7)
