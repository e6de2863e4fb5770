"""Prepared /proc trees modelled on real Kubernetes nodes (cgroup v2 has no memory
controller on this machine, so its files can only be read from trees like these)."""

from dataclasses import dataclass, field
from pathlib import Path

PF_KTHREAD = 0x00200000


def stat_line(pid: int, comm: str, starttime: int, flags: int = 0x400100, ppid: int = 1) -> str:
    # Fields 1..22 as the kernel writes them; the rest is padding the parser ignores.
    fields = [str(pid), f"({comm})", "S", str(ppid), str(pid), str(pid), "0", "-1", str(flags)]
    fields += ["0"] * (21 - len(fields)) + [str(starttime)] + ["0"] * 30
    return " ".join(fields) + "\n"


@dataclass
class FakeProcess:
    pid: int
    comm: str
    starttime: int = 1000
    flags: int = 0x400100
    cgroup: str = ""
    mountinfo: str = ""
    files: dict[str, str] = field(default_factory=dict)  # path below /proc/<pid>/root


def write_process(proc_root: Path, process: FakeProcess) -> Path:
    base = proc_root / str(process.pid)
    base.mkdir(parents=True)
    (base / "stat").write_text(
        stat_line(process.pid, process.comm, process.starttime, process.flags)
    )
    (base / "cgroup").write_text(process.cgroup)
    (base / "mountinfo").write_text(process.mountinfo)
    (base / "fd").mkdir()
    for relative, text in process.files.items():
        path = base / "root" / relative.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return base


def v1_memory_files(
    directory: str, usage: int, limit: int, inactive_file: int = 0
) -> dict[str, str]:
    stat = (
        f"cache {inactive_file}\nrss {usage - inactive_file}\n"
        f"hierarchical_memory_limit {limit}\n"
        f"total_cache {inactive_file}\ntotal_inactive_file {inactive_file}\n"
        f"total_active_file 0\n"
    )
    return {
        f"{directory}/memory.usage_in_bytes": f"{usage}\n",
        f"{directory}/memory.limit_in_bytes": f"{limit}\n",
        f"{directory}/memory.stat": stat,
    }


def v2_memory_files(
    directory: str, current: int, maximum: str, inactive_file: int = 0
) -> dict[str, str]:
    stat = f"anon {current - inactive_file}\nfile {inactive_file}\ninactive_file {inactive_file}\n"
    return {
        f"{directory}/memory.current": f"{current}\n",
        f"{directory}/memory.max": f"{maximum}\n",
        f"{directory}/memory.stat": stat,
        f"{directory}/memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
    }


POD = "pod8b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
APP_ID = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa99887766554433221100"
V1_CONTAINER = f"/kubepods/burstable/{POD}/{APP_ID}"
V2_SCOPE = (
    "/kubepods.slice/kubepods-burstable.slice/"
    f"kubepods-burstable-{POD.replace('-', '_')}.slice/cri-containerd-{APP_ID}.scope"
)

# cgroup v1 node (containerd, no cgroup namespace): the container's memory hierarchy is
# bind-mounted with its own cgroup as the mount root.
V1_CGROUP_FILE = (
    f"12:memory:{V1_CONTAINER}\n11:cpu,cpuacct:{V1_CONTAINER}\n"
    f"10:pids:{V1_CONTAINER}\n1:name=systemd:{V1_CONTAINER}\n0::/\n"
)
V1_MOUNTINFO = (
    "1800 1700 0:120 / / rw,relatime master:500 - overlay overlay rw,lowerdir=/l,upperdir=/u\n"
    "1810 1800 0:130 / /sys rw,nosuid - sysfs sysfs ro\n"
    "1820 1810 0:140 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755\n"
    f"1830 1820 0:33 {V1_CONTAINER} /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime "
    "master:15 - cgroup cgroup rw,memory\n"
    f"1831 1820 0:34 {V1_CONTAINER} /sys/fs/cgroup/cpu,cpuacct ro,nosuid master:16 - cgroup "
    "cgroup rw,cpu,cpuacct\n"
)

# cgroup v2 node, containerd with a private cgroup namespace: read by a sidecar in a
# namespace of its own, the app's paths are relative to the sidecar's cgroup ("/../<app>").
V2_NS_CGROUP_FILE = f"0::/../cri-containerd-{APP_ID}.scope\n"
V2_NS_MOUNTINFO = (
    "2900 2800 0:220 / / rw,relatime - overlay overlay rw,lowerdir=/l\n"
    f"2910 2900 0:26 /../cri-containerd-{APP_ID}.scope /sys/fs/cgroup ro,nosuid,nodev,noexec,"
    "relatime - cgroup2 cgroup rw,nsdelegate,memory_recursiveprot\n"
)
# The same node read from inside the app's own namespace view: `0::/`, and a mount whose root
# names the container's cgroup.
V2_NS_SELF_CGROUP_FILE = "0::/\n"
V2_NS_SELF_MOUNTINFO = (
    f"2910 2900 0:26 {V2_SCOPE} /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 "
    "cgroup rw,nsdelegate\n"
)
# cgroup v2 without a cgroup namespace (cgroupns=host): absolute paths, the whole hierarchy
# mounted at /sys/fs/cgroup.
V2_HOST_CGROUP_FILE = f"0::{V2_SCOPE}\n"
V2_HOST_MOUNTINFO = (
    "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n"
)
