"""The defaults file's `env` is checked against the watcher's own registry
(oomdump.watcher_env): every variable the watcher reads, not only the pod-overridable six,
so a value the watcher would refuse at start (exit 2, in every new pod) is refused here, when
the operator writes it, naming the variable, the value and what is allowed."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from oomdump import watcher_env
from sidecar.config import ConfigError, load_config
from tests.webhook.conftest import Pki
from tests.webhook.helpers import metric, patched, review, simple_pod, wait_for
from tests.webhook.server import REPO, RunningWebhook, run_webhook
from webhook.config import (
    RESERVED_ENV,
    DefaultsError,
    SidecarDefaults,
    load_defaults,
    parse_defaults,
)

# (variable, its YAML scalar as an operator writes it, a piece of the allowed range the
# refusal must show). One per rule kind and bound, for every variable whose rule refuses text.
BAD = [
    ("CRITICAL", "'0'", "from 1 to 99"),
    ("COOLDOWN", "500ms", "from 1s to 24h"),
    ("WATCH_TIME", "1m", "from 5ms to 10s"),
    ("BUCKET", "Bad_Bucket", "3-63 lowercase letters"),
    ("S3_PREFIX", "../x/", "at most 512"),
    ("PPROF_PORTS", "'0,8080'", "from 1 to 65535"),
    ("MEMORY_METRIC", "foo", "working_set, usage"),
    ("DETECT_MODE", "evnts", "auto, events, adaptive, poll"),
    ("DETECT_MODE", "EVENTS", "auto, events, adaptive, poll"),
    ("EMERGENCY_BRAKE", "sometimes", "true/false, on/off, 1/0"),
    ("PPROF_PATH", "debug/pprof/heap", "a URL path starting with `/`"),
    ("METRICS_PORT", "0", "1-65535"),
    ("METRICS_PORT", "70000", "1-65535"),
    ("METRICS_PORT", "http", "1-65535"),
    ("FETCH_TIMEOUT", "5", "a Go-style duration >= 10ms"),  # a bare number: no unit
    ("FETCH_TIMEOUT", "1ms", "a Go-style duration >= 10ms"),
    ("PPROF_MAX_BYTES", "100", "1 KiB to 1 TiB"),
    ("PPROF_MAX_BYTES", "64Mi", "1 KiB to 1 TiB"),
    ("SPOOL_MAX_FILES", "0", "1-1000000"),
    ("SPOOL_MAX_BYTES", str(2**51), "1 KiB to 1 PiB"),
    ("SHUTDOWN_GRACE", "-1s", "a Go-style duration >= 0ms"),
    ("REFRESH_INTERVAL", "50ms", "a Go-style duration >= 100ms"),
    ("UPLOAD_BACKOFF_MIN", "soon", "a Go-style duration >= 10ms"),
    ("UPLOAD_BACKOFF_MAX", "5ms", "a Go-style duration >= 10ms"),
]
# The variables whose rule takes any text: what they mean is checked where they are used.
ACCEPT_ANY_TEXT = {"S3_ENDPOINT_URL", "AWS_REGION", "PROC_ROOT"}
CHECKED = [variable.name for variable in watcher_env.VARIABLES if variable.name not in RESERVED_ENV]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "defaults.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def expected_refusal(path: Path, name: str, scalar: str) -> str:
    value = str(yaml.safe_load(scalar))
    return f"{path}: env.{name}={value!r}: {watcher_env.BY_NAME[name].allowed}"


@pytest.mark.parametrize(("name", "scalar", "bound"), BAD)
def test_a_value_the_watcher_refuses_is_refused_naming_it(
    tmp_path: Path, name: str, scalar: str, bound: str
) -> None:
    path = write(tmp_path, f"env:\n  CRITICAL: '80'\n  {name}: {scalar}\n")
    with pytest.raises(DefaultsError) as caught:
        load_defaults(path)
    assert str(caught.value) == expected_refusal(path, name, scalar)
    assert bound in str(caught.value)
    # The watcher refuses the same text at start: the webhook is not stricter than it.
    with pytest.raises(ConfigError, match=name):
        load_config({name: str(yaml.safe_load(scalar))})


def test_every_variable_with_a_rule_has_a_refusal_case() -> None:
    """A new registry variable gets a BAD case here, or is declared to take any text."""
    assert {name for name, _, _ in BAD} | ACCEPT_ANY_TEXT == set(CHECKED)


def test_values_the_watcher_accepts_are_injected_and_start_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
env:
  CRITICAL: 85
  COOLDOWN: 2m
  WATCH_TIME: 50ms
  BUCKET: team-heap-dumps
  S3_PREFIX: prod/
  PPROF_PORTS: "6060, 8080,6060"
  S3_ENDPOINT_URL: https://minio.example:9000
  AWS_REGION: eu-west-1
  PPROF_PATH: /heap
  MEMORY_METRIC: usage
  DETECT_MODE: poll
  EMERGENCY_BRAKE: "on"
  PROC_ROOT: /host/proc
  METRICS_PORT: 9090
  FETCH_TIMEOUT: 2s
  PPROF_MAX_BYTES: 1024
  SPOOL_MAX_FILES: 1000000
  SPOOL_MAX_BYTES: 1125899906842624
  SHUTDOWN_GRACE: "0"
  REFRESH_INTERVAL: 100ms
  UPLOAD_BACKOFF_MIN: 10ms
  UPLOAD_BACKOFF_MAX: 2m
  HTTPS_PROXY: http://proxy.example:3128
""",
    )
    env = load_defaults(path).env
    # The six a pod may override are normalized as their annotations are; the rest and
    # names the registry does not know are injected as written.
    assert env["PPROF_PORTS"] == "6060,8080"
    assert env["FETCH_TIMEOUT"] == "2s"
    assert env["METRICS_PORT"] == "9090"
    assert env["HTTPS_PROXY"] == "http://proxy.example:3128"
    config = load_config(env)
    assert (config.detect_mode, config.memory_metric, config.emergency_brake) == (
        "poll",
        "usage",
        True,
    )
    assert (config.fetch_timeout, config.metrics_port, config.spool_max_bytes) == (
        2.0,
        9090,
        2**50,
    )


def test_every_registry_default_written_out_loads(tmp_path: Path) -> None:
    written = {
        name: watcher_env.BY_NAME[name].default
        for name in CHECKED
        if watcher_env.BY_NAME[name].default is not None
    }
    path = write(tmp_path, yaml.safe_dump({"env": written}))
    env = load_defaults(path).env
    assert env == {name: value for name, value in written.items() if value != ""}
    load_config(env)


@pytest.mark.parametrize("name", sorted(ACCEPT_ANY_TEXT))
def test_variables_taking_any_text_are_injected_as_written(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, yaml.safe_dump({"env": {name: "anything: at all ☃"}}))
    assert load_defaults(path).env[name] == "anything: at all ☃"


@pytest.mark.parametrize("name", CHECKED)
def test_an_empty_value_is_not_injected_nor_checked(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, yaml.safe_dump({"env": {name: ""}}))
    assert name not in load_defaults(path).env


@pytest.mark.parametrize("name", sorted(RESERVED_ENV))
def test_variables_the_webhook_sets_stay_refused_even_when_valid(tmp_path: Path, name: str) -> None:
    assert name in watcher_env.BY_NAME  # a renamed variable would leave the reservation stale
    valid = watcher_env.BY_NAME[name].default or "https://example.test/notice"
    path = write(tmp_path, yaml.safe_dump({"env": {name: valid}}))
    with pytest.raises(DefaultsError, match=f"^{path}: env.{name} is set by the webhook itself$"):
        load_defaults(path)


def test_names_the_registry_does_not_know_pass_through_unchecked(tmp_path: Path) -> None:
    """Today's behaviour, kept: another program's variable (a proxy setting, a language
    runtime's knob) is not the watcher's to judge, and a misspelt name is not caught."""
    path = write(tmp_path, "env: {NO_PROXY: '*', detect_mode: evnts, GODEBUG: 'x=1'}\n")
    env = load_defaults(path).env
    assert (env["NO_PROXY"], env["detect_mode"], env["GODEBUG"]) == ("*", "evnts", "x=1")


@pytest.mark.parametrize(
    ("env", "what"),
    [
        ({"DETECT_MODE": "events"}, "DETECT_MODE=events"),
        ({"DETECT_MODE": " events "}, "DETECT_MODE=events"),  # the watcher strips it
        *(({"EMERGENCY_BRAKE": on}, "EMERGENCY_BRAKE") for on in ("1", "true", "ON", "yes")),
    ],
)
def test_least_privilege_still_refuses_what_needs_a_writable_cgroupfs(
    tmp_path: Path, env: dict[str, str], what: str
) -> None:
    path = write(tmp_path, yaml.safe_dump({"env": env, "privilegeProfile": "least-privilege"}))
    with pytest.raises(DefaultsError, match=f"{what} needs a writable cgroupfs"):
        load_defaults(path)
    privileged = write(tmp_path, yaml.safe_dump({"env": env, "privilegeProfile": "privileged"}))
    assert load_defaults(privileged).env.items() >= env.items()


@pytest.mark.parametrize(
    "env", [{"DETECT_MODE": "poll"}, {"DETECT_MODE": "adaptive"}, {"EMERGENCY_BRAKE": "off"}]
)
def test_least_privilege_accepts_what_it_can_do(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, yaml.safe_dump({"env": env, "privilegeProfile": "least-privilege"}))
    assert load_defaults(path).profile == "least-privilege"


@pytest.mark.parametrize("env", [{"UPLOAD_BACKOFF_MIN": "2m"}, {"UPLOAD_BACKOFF_MAX": "500ms"}])
def test_backoffs_in_the_wrong_order_are_refused(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="is below UPLOAD_BACKOFF_MIN"):
        load_config(env)  # each alone is allowed; against the other's default it is not
    with pytest.raises(DefaultsError, match="UPLOAD_BACKOFF"):
        load_defaults(write(tmp_path, yaml.safe_dump({"env": env})))


def watcher_starts(env: dict[str, str]) -> bool:
    try:
        load_config(env)
    except ConfigError:
        return False
    return True


TEXTS = st.one_of(
    st.sampled_from(
        ["0", "1", "99", "100", "1023", "1024", "65535", "65536", "5", "5s", "9ms", "10ms",
         "100ms", "24h", "25h", "1m30s", "on", "off", "yes", "events", "poll", "usage",
         "/x", "x", "prod/", "a//b", "6060,8080", "abc", " 70", "70 ", "-1s", "1e3"]
    ),
    st.text(alphabet="0123456789abcdefhimnsuxµ.,-_/: ", max_size=12),
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(CHECKED), text=TEXTS)
def test_the_webhook_refuses_exactly_what_the_watcher_refuses(name: str, text: str) -> None:
    """What the webhook injects starts the watcher; what it refuses, the watcher refuses
    too (a pod-overridable value with spaces around it aside: refused as its annotation)."""
    try:
        defaults: SidecarDefaults | None = parse_defaults(
            yaml.safe_dump({"env": {name: text}}), "probe"
        )
    except DefaultsError as error:
        # Its own rule, or a rule between variables (a backoff against the other's default).
        own = f"env.{name}={text!r}: {watcher_env.BY_NAME[name].allowed}"
        assert own in str(error) or "is below UPLOAD_BACKOFF_MIN" in str(error), str(error)
        defaults = None
    if defaults is not None:
        assert watcher_starts(defaults.env), (name, text, defaults.env)
    elif not (watcher_env.BY_NAME[name].pod_override and text != text.strip()):
        assert not watcher_starts({name: text}), (name, text)


# The real server: at start a bad file stops it with the reason; on a live reload the last
# good defaults keep serving, and the reason is logged and counted (webhook/app.py).


@pytest.mark.parametrize(
    ("line", "name", "scalar"),
    [("DETECT_MODE: evnts", "DETECT_MODE", "evnts"), ("FETCH_TIMEOUT: 5", "FETCH_TIMEOUT", "5")],
)
def test_a_bad_value_stops_the_webhook_at_start_with_the_reason(
    tmp_path: Path, module_pki: Pki, line: str, name: str, scalar: str
) -> None:
    path = write(tmp_path, f"env:\n  {line}\n")
    command = [
        sys.executable, "-m", "webhook", "--port", "1", "--sidecar-image", "img",
        "--tls-cert-file", str(module_pki.cert_file), "--tls-key-file", str(module_pki.key_file),
        "--defaults-file", str(path),
    ]  # fmt: skip
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 1
    assert finished.stderr.strip() == f"oomdump-webhook: {expected_refusal(path, name, scalar)}"


def served_env(webhook: RunningWebhook) -> dict[str, str]:
    with webhook.client() as client:
        response = client.post("/mutate", json=review(simple_pod())).json()["response"]
    sidecar = patched(simple_pod(), response)["spec"]["containers"][-1]
    return {item["name"]: item.get("value") for item in sidecar["env"]}


def webhook_metrics(webhook: RunningWebhook) -> str:
    with webhook.client() as client:
        return client.get("/metrics").text


def refusals(webhook: RunningWebhook) -> float:
    text = webhook_metrics(webhook)
    return metric(text, "oomdump_webhook_reloads_total", file="defaults", result="refused")


def test_a_live_reload_with_a_bad_value_keeps_the_last_good_defaults(
    tmp_path: Path, module_pki: Pki
) -> None:
    good = {"DETECT_MODE": "poll", "FETCH_TIMEOUT": "2s"}
    path = write(tmp_path, yaml.safe_dump({"env": good}))
    pki = module_pki
    args = ("--defaults-file", str(path), "--reload-interval", "0.1")
    with run_webhook(tmp_path, pki.cert_file, pki.key_file, pki.ca_file, *args) as webhook:
        last_good = served_env(webhook)
        assert last_good.items() >= good.items()
        bad = [("MEMORY_METRIC", "foo"), ("DETECT_MODE", "evnts"), ("FETCH_TIMEOUT", "5"),
               ("METRICS_PORT", "70000"), ("PPROF_MAX_BYTES", "100")]  # fmt: skip
        for count, (name, scalar) in enumerate(bad, start=1):
            others = "".join(f"  {key}: {value}\n" for key, value in good.items() if key != name)
            write(tmp_path, f"env:\n{others}  {name}: {scalar}\n")
            wait_for(lambda count=count: refusals(webhook) == count)
            reason = expected_refusal(path, name, scalar)
            assert f"keeping the previous defaults: {reason}" in webhook.log_text()
            assert metric(webhook_metrics(webhook), "oomdump_webhook_defaults_stale") == 1
            assert served_env(webhook) == last_good
        write(tmp_path, "env: {DETECT_MODE: adaptive, FETCH_TIMEOUT: 3s}\n")
        wait_for(lambda: served_env(webhook)["DETECT_MODE"] == "adaptive")
        assert served_env(webhook)["FETCH_TIMEOUT"] == "3s"
        assert metric(webhook_metrics(webhook), "oomdump_webhook_defaults_stale") == 0
