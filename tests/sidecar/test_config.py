"""The environment contract: defaults, and a clear error for each bad value."""

import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.config import ConfigError, load_config


def test_defaults() -> None:
    config = load_config({})
    assert config.critical_percent == 70
    assert config.cooldown == 30
    assert config.watch_time == pytest.approx(0.1)
    assert config.bucket is None
    assert config.dump_dir == Path("/tmp/oomdump")
    assert config.pprof_path == "/debug/pprof/heap"
    assert config.pprof_ports is None
    assert config.memory_metric == "working_set"
    assert config.pod_namespace == "local"
    assert config.proc_root == Path("/proc")
    assert config.metrics_port is None
    assert (config.detect_mode, config.emergency_brake) == ("auto", False)
    assert config.refresh_interval == 2


def test_values_are_read() -> None:
    config = load_config(
        {
            "CRITICAL": "85",
            "COOLDOWN": "1m30s",
            "WATCH_TIME": "5ms",
            "BUCKET": "dumps",
            "S3_PREFIX": "p/",
            "PPROF_PORTS": "6060, 8080,6060",
            "MEMORY_METRIC": "usage",
            "POD_NAME": "web-1",
            "POD_NAMESPACE": "shop",
            "METRICS_PORT": "9100",
            "EMERGENCY_BRAKE": "on",
            "PROC_ROOT": "/host/proc",
            "REFRESH_INTERVAL": "500ms",
        }
    )
    assert config.critical_percent == 85
    assert config.cooldown == 90
    assert config.watch_time == pytest.approx(0.005)
    assert config.pprof_ports == (6060, 8080)
    assert (config.pod_name, config.pod_namespace) == ("web-1", "shop")
    assert config.metrics_port == 9100
    assert config.emergency_brake
    assert config.proc_root == Path("/host/proc")
    assert config.refresh_interval == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CRITICAL", "0", r"CRITICAL='0' is not allowed; allowed: an integer percent from 1"),
        ("CRITICAL", "100", r"CRITICAL='100' is not allowed; allowed: an integer percent"),
        ("CRITICAL", "high", r"CRITICAL='high' is not allowed; allowed: an integer percent"),
        ("COOLDOWN", "30", r"COOLDOWN='30' is not allowed; allowed: a Go duration from 1s"),
        # The webhook's bounds, from the one contract: below them the watcher refuses too.
        ("COOLDOWN", "500ms", r"COOLDOWN='500ms' is not allowed; allowed: a Go duration from 1s"),
        ("WATCH_TIME", "0", r"WATCH_TIME='0' is not allowed; allowed: a Go duration from 5ms"),
        ("WATCH_TIME", "1ms", r"WATCH_TIME='1ms' is not allowed"),
        ("WATCH_TIME", "fast", r"WATCH_TIME='fast' is not allowed"),
        ("PPROF_PORTS", "80,http", r"PPROF_PORTS='80,http' is not allowed; allowed: a comma"),
        ("PPROF_PORTS", "70000", r"PPROF_PORTS='70000'.*1 to 65535"),
        ("S3_PREFIX", "../../x/", r"S3_PREFIX='../../x/' is not allowed; allowed: at most 512"),
        ("BUCKET", "Bad_Bucket", r"BUCKET='Bad_Bucket' is not allowed; allowed: an S3 bucket"),
        ("MEMORY_METRIC", "rss", r"MEMORY_METRIC='rss' is not allowed; allowed: working_set"),
        ("METRICS_PORT", "0", r"METRICS_PORT=0 is out of range; allowed: 1-65535"),
        ("EMERGENCY_BRAKE", "maybe", r"EMERGENCY_BRAKE='maybe' is not a boolean"),
        ("PPROF_PATH", "debug/pprof/heap", r"PPROF_PATH='debug/pprof/heap' must start with '/'"),
        ("SPOOL_MAX_FILES", "0", r"SPOOL_MAX_FILES=0 is out of range"),
        ("REFRESH_INTERVAL", "10ms", r"REFRESH_INTERVAL='10ms' is too short"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({name: value})


def test_main_exits_2_with_the_reason() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sidecar"],
        env={"CRITICAL": "120", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "event=config-invalid" in result.stderr
    assert "CRITICAL='120' is not allowed; allowed: an integer percent" in result.stderr


def test_main_refuses_unknown_detect_mode() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sidecar"],
        env={"DETECT_MODE": "psychic", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "DETECT_MODE='psychic'" in result.stderr


def test_main_exits_2_when_metrics_port_is_taken(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "sidecar"],
            env={
                "METRICS_PORT": str(taken.getsockname()[1]),
                "PATH": "/usr/bin:/bin",
                "DUMP_DIR": str(tmp_path),
                "PROC_ROOT": str(tmp_path),
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert "event=metrics-port-unusable" in result.stderr


def test_main_exits_2_when_dump_dir_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = subprocess.run(
        [sys.executable, "-m", "sidecar"],
        env={"DUMP_DIR": str(blocker / "dumps"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "event=dump-dir-unusable" in result.stderr
