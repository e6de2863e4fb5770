"""Watches on a cgroup folder the test names itself (a real group, or a prepared tree)."""

from collections.abc import Hashable
from pathlib import Path
from typing import Literal

from sidecar.cgroup import MemoryCgroup
from sidecar.cgroupfs import CgroupDir
from sidecar.detection.watch import Watch


def group_at(path: Path | str, version: Literal[1, 2]) -> MemoryCgroup:
    return MemoryCgroup(version, str(path), CgroupDir.at(path))


def watch_at(key: Hashable, path: Path | str, version: Literal[1, 2], threshold: int) -> Watch:
    return Watch(key, group_at(path, version), threshold)
