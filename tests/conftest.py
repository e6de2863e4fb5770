"""Fixtures every test folder may use, and the rule on skips.

Every run ends with the list of skipped tests and why. When `CI` is set, a skip is an
error: CI runs as root on a machine with cgroup v1, ../shared, apt and the registries, so a
test that skips there is a test that did not run. A reason CI may legitimately lack goes
into CI_MAY_LACK (none today), and its test must say so in its skip reason.
"""

import os
from pathlib import Path

import pytest

from sidecar import cgroupfs

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CI_MAY_LACK: tuple[str, ...] = ()
_SKIPPED: list[tuple[str, str]] = []


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    _SKIPPED.append((item.nodeid, reason))
    if os.environ.get("CI") and not any(allowed in reason for allowed in CI_MAY_LACK):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which must run every test: {reason}"


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    terminalreporter.section(f"skips ({len(_SKIPPED)})")
    for nodeid, reason in _SKIPPED:
        terminalreporter.write_line(f"{nodeid}: {reason}")
    if not _SKIPPED:
        terminalreporter.write_line("none")


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
    fd = os.open(tmp_path, os.O_PATH)
    try:
        magic = cgroupfs.filesystem_magic(fd)
    finally:
        os.close(fd)
    monkeypatch.setitem(cgroupfs.ACCEPTED_FILESYSTEMS, magic, "prepared tree (test)")
