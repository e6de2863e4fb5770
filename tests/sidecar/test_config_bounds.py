"""Each bound of each watcher variable: the edge is accepted, one step past it is refused
with a message naming the variable, the value and what is allowed."""

from pathlib import Path

import pytest

from sidecar.config import ConfigError, load_config

# (variable, Config field, lowest accepted text, its value, highest, its value)
EDGES = [
    ("CRITICAL", "critical_percent", "1", 1, "99", 99),
    ("COOLDOWN", "cooldown", "1s", 1.0, "24h", 86400.0),
    ("WATCH_TIME", "watch_time", "5ms", 0.005, "10s", 10.0),
    ("PPROF_PORTS", "pprof_ports", "1", (1,), "65535", (65535,)),
    ("METRICS_PORT", "metrics_port", "1", 1, "65535", 65535),
    ("SPOOL_MAX_FILES", "spool_max_files", "1", 1, "1000000", 1_000_000),
    ("SPOOL_MAX_BYTES", "spool_max_bytes", "1024", 1024, str(2**50), 2**50),
    ("PPROF_MAX_BYTES", "pprof_max_bytes", "1024", 1024, str(2**40), 2**40),
]


@pytest.mark.parametrize(("name", "field", "low", "low_value", "high", "high_value"), EDGES)
def test_both_edges_are_accepted(
    name: str, field: str, low: str, low_value: object, high: str, high_value: object
) -> None:
    assert getattr(load_config({name: low}), field) == pytest.approx(low_value)
    assert getattr(load_config({name: high}), field) == pytest.approx(high_value)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CRITICAL", "-1", r"^CRITICAL='-1' is not allowed; allowed: an integer percent from 1 to"),
        ("COOLDOWN", "999ms", r"^COOLDOWN='999ms' is not allowed; allowed: .* from 1s to 24h"),
        ("COOLDOWN", "24h1ms", r"^COOLDOWN='24h1ms' is not allowed; allowed: .* from 1s to 24h"),
        ("WATCH_TIME", "4ms", r"^WATCH_TIME='4ms' is not allowed; allowed: .* from 5ms to 10s"),
        ("WATCH_TIME", "10001ms", r"^WATCH_TIME='10001ms' is not allowed; allowed: .* 5ms to 10s"),
        ("PPROF_PORTS", "0", r"^PPROF_PORTS='0' is not allowed; allowed: .* from 1 to 65535$"),
        ("PPROF_PORTS", "65536", r"^PPROF_PORTS='65536' is not allowed; allowed: .* 1 to 65535$"),
        ("BUCKET", "ab", r"^BUCKET='ab' is not allowed; allowed: an S3 bucket name: 3-63"),
        ("BUCKET", "a" * 64, r"^BUCKET='a{64}' is not allowed; allowed: an S3 bucket name: 3-63"),
        ("S3_PREFIX", "p" * 513, r"^S3_PREFIX='p{513}' is not allowed; allowed: at most 512"),
        ("S3_PREFIX", "/abs/", r"^S3_PREFIX='/abs/' is not allowed; allowed: .*no leading `/`"),
        ("METRICS_PORT", "65536", r"^METRICS_PORT=65536 is out of range; allowed: 1-65535$"),
        ("METRICS_PORT", "http", r"^METRICS_PORT='http' is not an integer; allowed: 1-65535$"),
        ("SPOOL_MAX_FILES", "1000001", r"^SPOOL_MAX_FILES=1000001 is out of range; allowed: 1-"),
        ("SPOOL_MAX_FILES", "many", r"^SPOOL_MAX_FILES='many' is not an integer; allowed: 1-"),
        (
            "SPOOL_MAX_BYTES",
            "1023",
            r"^SPOOL_MAX_BYTES=1023 is out of range; allowed: 1024-1125899906842624 bytes"
            r" \(1 KiB to 1 PiB\)$",
        ),
        ("SPOOL_MAX_BYTES", str(2**50 + 1), r"^SPOOL_MAX_BYTES=1125899906842625 is out of range"),
        ("SPOOL_MAX_BYTES", "512Mi", r"^SPOOL_MAX_BYTES='512Mi' is not an integer; allowed: 1024"),
        ("PPROF_MAX_BYTES", "1023", r"^PPROF_MAX_BYTES=1023 is out of range; allowed: 1024-"),
        (
            "PPROF_MAX_BYTES",
            str(2**40 + 1),
            r"^PPROF_MAX_BYTES=1099511627777 is out of range; allowed: .*\(1 KiB to 1 TiB\)$",
        ),
        ("FETCH_TIMEOUT", "9ms", r"^FETCH_TIMEOUT='9ms' is too short; allowed: .* >= 10ms$"),
        ("FETCH_TIMEOUT", "5", r"^FETCH_TIMEOUT: '5' is not a Go-style duration.*; allowed: .*"),
        ("SHUTDOWN_GRACE", "-1s", r"^SHUTDOWN_GRACE: '-1s' is not a Go-style .* >= 0ms$"),
        ("REFRESH_INTERVAL", "99ms", r"^REFRESH_INTERVAL='99ms' is too short; allowed: .* 100ms$"),
        ("UPLOAD_BACKOFF_MIN", "9ms", r"^UPLOAD_BACKOFF_MIN='9ms' is too short; .* >= 10ms$"),
        ("UPLOAD_BACKOFF_MAX", "9ms", r"^UPLOAD_BACKOFF_MAX='9ms' is too short; .* >= 10ms$"),
        # Below the default UPLOAD_BACKOFF_MIN (1s): the pair must stay ordered.
        ("UPLOAD_BACKOFF_MAX", "500ms", r"^UPLOAD_BACKOFF_MAX='500ms' is below UPLOAD_BACKOFF_MIN"),
        ("DETECT_MODE", "Events", r"^DETECT_MODE='Events' is not allowed; allowed: auto, events"),
        ("MEMORY_METRIC", "rss", r"^MEMORY_METRIC='rss' is not allowed; .*working_set, usage$"),
        ("EMERGENCY_BRAKE", "2", r"^EMERGENCY_BRAKE='2' is not a boolean; allowed: true/false"),
        ("NOTIFY_URL", "http://x/notice", r"^NOTIFY_URL='http://x/notice' is not allowed; .*https"),
        ("NOTIFY_URL", "https://", r"^NOTIFY_URL='https://' is not allowed; allowed: an https"),
        ("PPROF_PATH", "heap", r"^PPROF_PATH='heap' must start with '/'$"),
    ],
)
def test_one_past_each_bound_is_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({name: value})


def test_the_backoff_pair_may_be_equal() -> None:
    config = load_config({"UPLOAD_BACKOFF_MIN": "2s", "UPLOAD_BACKOFF_MAX": "2s"})
    assert (config.upload_backoff_min, config.upload_backoff_max) == (2.0, 2.0)


def test_shutdown_grace_may_be_zero() -> None:
    assert load_config({"SHUTDOWN_GRACE": "0"}).shutdown_grace == 0.0


def test_the_rest_are_read_as_written() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    config = load_config(
        {
            "S3_ENDPOINT_URL": " http://127.0.0.1:9000 ",
            "DUMP_DIR": "/data/dumps",
            "PPROF_PATH": "/debug/pprof/heap?gc=1",
            "NODE_NAME": "node-7",
            "DETECT_MODE": "poll",
            "FETCH_TIMEOUT": "1.5s",
            "PPROF_MAX_BYTES": "2048",
            "SPOOL_MAX_BYTES": "4096",
            "SHUTDOWN_GRACE": "1m",
            "UPLOAD_BACKOFF_MIN": "10ms",
            "UPLOAD_BACKOFF_MAX": "2m",
            "NOTIFY_URL": "https://oomdump-webhook.oomdump-system.svc:443/notice",
            "NOTIFY_TOKEN_FILE": "/run/token",
            "NOTIFY_CA": f"\n{pem}\n",
            "EMERGENCY_BRAKE": "YES",
            "AWS_REGION": "eu-west-1",  # boto3's: documented, not part of Config
        }
    )
    assert config.s3_endpoint_url == "http://127.0.0.1:9000"
    assert config.dump_dir == Path("/data/dumps")
    assert config.pprof_path == "/debug/pprof/heap?gc=1"
    assert config.node_name == "node-7"
    assert config.detect_mode == "poll"
    assert config.fetch_timeout == pytest.approx(1.5)
    assert (config.pprof_max_bytes, config.spool_max_bytes) == (2048, 4096)
    assert config.shutdown_grace == 60
    assert (config.upload_backoff_min, config.upload_backoff_max) == (0.01, 120)
    assert config.notify_url == "https://oomdump-webhook.oomdump-system.svc:443/notice"
    assert config.notify_token_file == Path("/run/token")
    assert config.notify_ca == pem
    assert config.emergency_brake is True


def test_unset_optional_variables_are_none() -> None:
    config = load_config({})
    assert (config.s3_endpoint_url, config.notify_url, config.notify_ca) == (None, None, None)
    assert config.notify_token_file == Path("/var/run/secrets/oomdump/token")
    assert (config.spool_max_files, config.spool_max_bytes) == (200, 512 * 2**20)
    assert (config.pprof_max_bytes, config.fetch_timeout) == (64 * 2**20, 5)
    assert (config.shutdown_grace, config.upload_backoff_min, config.upload_backoff_max) == (
        10,
        1,
        60,
    )
    assert config.s3_prefix == ""
