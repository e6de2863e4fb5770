"""Fixtures every test folder may use."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_admission_reviews() -> Path:
    """The real AdmissionReviews in ../shared/fixtures (read in place, never copied)."""
    folder = SHARED / "fixtures" / "admission-reviews"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: the shared fixtures live beside the checkout")
    return folder


@pytest.fixture
def prepared_cgroup_trees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the watcher read cgroup files from prepared trees under tmp_path (cases no
    kernel here can produce: cgroup v2 memory, nested node layouts). The watcher itself
    accepts cgroup and cgroup2 filesystems only; this adds tmp_path's, for this test alone."""
    from sidecar import cgroupfs

    fd = os.open(tmp_path, os.O_PATH)
    try:
        magic = cgroupfs.filesystem_magic(fd)
    finally:
        os.close(fd)
    monkeypatch.setitem(cgroupfs.ACCEPTED_FILESYSTEMS, magic, "prepared tree (test)")
