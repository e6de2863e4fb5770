"""promtool, and real scrapes of real watchers and a real webhook, for the alert tests.

promtool is built from the Go module proxy (testinfra/promtool.py) and cached; cold, it
is the longest build of this folder (13 min measured on 2 cores shared with other cold
builds), so it is built after collection, before the first test, where it counts against
no test's timeout.
"""

from pathlib import Path

import pytest

from testinfra.cgroups import cgroup_v1_unavailable
from testinfra.gobuild import GoBuildError
from testinfra.minio import minio_binary, running_minio
from testinfra.promtool import promtool_binary

from . import real_scrapes
from .real_scrapes import Scrape

_build_errors: list[str] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if not any("tests/helm/monitoring/" in item.nodeid for item in session.items):
        return
    try:
        promtool_binary()
        minio_binary()
        real_scrapes.go_leak_binary()
        real_scrapes.leaker_binary()
    except GoBuildError as error:
        _build_errors.append(str(error))


@pytest.fixture(scope="session")
def promtool_built() -> None:
    if _build_errors:
        pytest.fail(f"building a Go program failed: {_build_errors[0]}", pytrace=False)


@pytest.fixture(scope="session")
def watcher_scrapes(
    promtool_built: None, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Scrape]:
    """{pod name: what its real watcher served} after the events of real_scrapes.py."""
    reason = cgroup_v1_unavailable()
    if reason is not None:
        pytest.skip(f"real watchers under real memory limits: {reason}")
    folder: Path = tmp_path_factory.mktemp("scrapes")
    with running_minio(folder / "minio") as minio:
        return real_scrapes.all_pods(folder / "pods", minio)


@pytest.fixture(scope="session")
def webhook_scrape(tmp_path_factory: pytest.TempPathFactory) -> Scrape:
    return real_scrapes.webhook(tmp_path_factory.mktemp("webhook"))
