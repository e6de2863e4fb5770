"""oomdump_last_capture_top_bytes{comm,function}: the leak named on /metrics.

The function name comes from the app's profile, so it is hostile: whatever it holds
(quotes, backslashes, newlines, terminal escapes, 100 KB, bytes that are not UTF-8), the
exposition stays well-formed as Prometheus' own parser reads it, each label is bounded,
and the series are bounded (one per process name, MAX_CULPRITS in all). Then the real
watcher (`python -m sidecar`) captures a real Go leak in a real cgroup v1 group before the
kernel kills it, and its /metrics names the leaking function, also after the kill.
"""

import gzip
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar import culprit, metrics
from sidecar.metrics import Metrics
from testinfra.cgroups import MiB, memory_cgroup
from testinfra.netutil import free_port
from testinfra.protobuf import message, number, varint
from testinfra.waiting import wait_for
from testinfra.watcher_process import PodView, WatcherProcess

NAME = "oomdump_last_capture_top_bytes"
# A sample line of the text format: name, labels whose values hold only escaped quotes and
# backslashes, one value.
LABEL = r'[a-z_]+="(\\.|[^"\\])*"'
SAMPLE_LINE = re.compile(rf"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{{{LABEL}(,{LABEL})*\}})? \S+$")


def top(name: str, flat_bytes: int = 1000) -> list[dict[str, object]]:
    return [{"name": name, "flat_bytes": flat_bytes}]


def profile_naming(name: bytes) -> bytes:
    """A heap profile whose one function, holding 4096 bytes, is called `name` (raw bytes)."""
    strings = b"".join(message(6, text) for text in (b"", b"inuse_space", b"bytes", name))
    sample = message(2, message(1, varint(1)) + message(2, varint(4096)))
    tables = message(4, number(1, 1) + message(4, number(1, 1)))
    tables += message(5, number(1, 1) + number(2, 3))
    return gzip.compress(message(1, number(1, 1) + number(2, 2)) + sample + tables + strings)


@pytest.fixture
def served() -> Iterator[tuple[Metrics, int]]:
    registry = Metrics()
    port = free_port()
    stop = registry.serve(port, addr="127.0.0.1")
    try:
        yield registry, port
    finally:
        stop()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return answer.read().decode("utf-8")


def culprit_labels(text: str) -> dict[str, tuple[str, float]]:
    """comm -> (function, bytes), as Prometheus' parser reads the exposition."""
    families = {family.name: family for family in text_string_to_metric_families(text)}
    return {
        sample.labels["comm"]: (sample.labels["function"], sample.value)
        for sample in families[NAME].samples
    }


def test_hostile_function_names_never_break_the_exposition(served: tuple[Metrics, int]) -> None:
    registry, port = served
    not_utf8 = culprit.read(profile_naming(b"main.\xff\xfe\xc3(leak)")).top[0]["name"]
    assert not_utf8 == "main.\ufffd\ufffd\ufffd(leak)"  # the reader replaces what is not UTF-8
    hostile = {
        "quotes": 'main.(*T).say "hi" } oomdump_watched_processes 9',
        "backslashes": "C:\\path\\to\\func\\",
        "newline": 'main.f"}\nfake_metric{a="b"} 1\n# TYPE x counter',
        "terminal": "main.f\r\x1b[31mred\x7f\x85\u2028",
        "huge": "x" * 100_000,
        "wide": "é" * 200,
        "not-utf8": not_utf8,
        "surrogate": "main.\udcff",
    }
    for comm, function in hostile.items():
        registry.culprits.name(comm, top(function))
    text = scrape(port)
    for line in text.splitlines():
        assert line.startswith("# ") or SAMPLE_LINE.match(line), line[:200]
    assert "fake_metric" not in [line.split("{")[0] for line in text.splitlines()]
    labels = culprit_labels(text)
    assert labels == {
        "quotes": (hostile["quotes"], 1000.0),
        "backslashes": (hostile["backslashes"], 1000.0),
        "newline": ('main.f"}\ufffdfake_metric{a="b"} 1\ufffd# TYPE x counter', 1000.0),
        "terminal": ("main.f\ufffd\ufffd[31mred\ufffd\ufffd\ufffd", 1000.0),
        "huge": ("x" * 253 + "…", 1000.0),
        "wide": ("é" * 126 + "…", 1000.0),  # 252 bytes and the mark: no character split
        "not-utf8": (not_utf8, 1000.0),
        "surrogate": ("main.?", 1000.0),
    }
    for function, _ in labels.values():
        assert len(function.encode()) <= metrics.MAX_FUNCTION_BYTES
    # The other families still read as they should beside them.
    assert "oomdump_watched_processes 0.0" in text.splitlines()


def test_a_label_that_utf_8_cannot_encode_never_fails_a_scrape(
    served: tuple[Metrics, int],
) -> None:
    """Any label, not only the culprit's (a lone surrogate from a decoder that kept one)."""
    registry, port = served
    registry.unwatched.labels("cgroup not usable: \udcff").set(1)
    assert 'oomdump_unwatched_processes{reason="cgroup not usable: ?"} 1.0' in scrape(port)


def test_one_series_per_process_name_and_at_most_max_culprits(
    served: tuple[Metrics, int],
) -> None:
    registry, port = served
    names = [f"app-{index}" for index in range(metrics.MAX_CULPRITS + 4)]
    for index, comm in enumerate(names):
        registry.culprits.name(comm, top(f"main.leak{index}", 1000 + index))
    labels = culprit_labels(scrape(port))
    # The least recently captured names went first.
    assert sorted(labels) == sorted(names[4:])
    assert labels["app-4"] == ("main.leak4", 1004.0)
    # A later capture of a name replaces its series (never two for one name) and makes it
    # the most recent, so the next new name drops another.
    registry.culprits.name("app-4", top("main.other", 7))
    registry.culprits.name("newcomer", top("main.leak", 5))
    labels = culprit_labels(scrape(port))
    assert labels["app-4"] == ("main.other", 7.0) and "app-5" not in labels
    assert len(labels) == metrics.MAX_CULPRITS
    # A capture whose profile named nothing (unreadable) leaves no stale function behind.
    registry.culprits.name("app-6", [])
    assert "app-6" not in culprit_labels(scrape(port))
    # A hostile comm is bounded too.
    registry.culprits.name("c" * 100_000, top("main.leak"))
    assert "c" * 61 + "…" in culprit_labels(scrape(port))


@pytest.mark.cgroup
@pytest.mark.usefixtures("cgroup_v1")
def test_the_real_watcher_names_the_leaking_function_on_metrics(
    leak_binary: Path, tmp_path: Path
) -> None:
    """`python -m sidecar` with METRICS_PORT; the Go leak goes over 70% of 256 MiB, is
    captured, then OOM-killed: /metrics names main.leakDocuments with the bytes it held,
    and still does once the process is gone."""
    (tmp_path / "proc").mkdir()
    view = PodView(tmp_path / "proc")
    port = free_port()
    env = {
        "PROC_ROOT": view.proc_root,
        "DUMP_DIR": str(tmp_path / "dumps"),
        "METRICS_PORT": str(port),
        "CRITICAL": "70",
    }
    leak = [str(leak_binary), "-port", "0", "-mode", "gradual", "-step", str(8 * MiB)]
    with memory_cgroup(256 * MiB) as group, WatcherProcess(env) as watcher:
        app = group.spawn([*leak, "-interval", "50ms"], stdout=subprocess.DEVNULL)
        view.add(app.pid)
        assert app.wait(timeout=60) == -9 and group.oom_kills() == 1
        watcher.log.wait_for_all("event=dump-top", f"pid={app.pid} ", 'top="main.leakDocuments ')
        wait_for(lambda: "go-memory-leak" in culprit_labels(scrape(port)), "the culprit series")
        function, held = culprit_labels(scrape(port))["go-memory-leak"]
        view.remove(app.pid)
        watcher.log.wait_for_all("event=process-gone", f"pid={app.pid} ")
        after_exit = culprit_labels(scrape(port))
    assert function == "main.leakDocuments"
    assert 100 * MiB < held < 256 * MiB  # over 70% of the limit in all; most of it leaked
    assert after_exit == {"go-memory-leak": (function, held)}
