"""deploy/monitoring: the chart's alert rules and ServiceMonitor rendered (`make render-base`),
the same rules as a plain rule file, checked by the real promtool and against what real
watchers and a real webhook serve."""

import shutil
from pathlib import Path

import pytest
import yaml

from testinfra.helm import template
from testinfra.helm_base import (
    MONITORING,
    MONITORING_APIS,
    MONITORING_HAND_WRITTEN,
    MONITORING_VALUES,
    RULE_FILE,
    monitoring_differences,
    monitoring_files,
)
from testinfra.kustomize import render
from testinfra.promtool import PromtoolError, run_promtool

from . import rules
from .real_scrapes import Scrape

UNIT_TESTS = Path(__file__).with_name("oomdump-rules.test.yaml")
KINDS = {"PrometheusRule", "ServiceMonitor"}


def _by_kind(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_deploy_monitoring_is_what_the_chart_renders(helm_built) -> None:
    assert monitoring_differences() == [], "run `make render-base`"


def test_a_hand_edit_of_deploy_monitoring_is_caught(helm_built, tmp_path: Path) -> None:
    """Guards the test above: every generated file is compared, an extra one noticed, the
    hand-written scrape config left alone."""
    copy = tmp_path / "monitoring"
    shutil.copytree(MONITORING, copy)
    assert monitoring_differences(copy) == []
    rule_file = copy / RULE_FILE
    rule_file.write_text(rule_file.read_text().replace("[10m]", "[1h]"))
    (copy / "extra.yaml").write_text("{}\n")
    assert monitoring_differences(copy) == [
        "extra.yaml: not rendered from the chart",
        f"{RULE_FILE}: differs",
    ]
    for name in MONITORING_HAND_WRITTEN:
        (copy / name).unlink()
    assert "prometheus-scrape.yaml: missing" not in monitoring_differences(copy)


def test_kustomize_installs_what_helm_installs_with_metrics_on(helm_built) -> None:
    """`kubectl apply -k deploy/monitoring` and the chart with MONITORING_VALUES (where
    the Operator's CRDs exist) make the same PrometheusRule and ServiceMonitor."""
    chart = [o for o in template(MONITORING_VALUES, MONITORING_APIS) if o["kind"] in KINDS]
    assert len(chart) == 2
    assert _by_kind(render(MONITORING)) == _by_kind(chart)


def test_the_plain_rule_file_holds_the_prometheus_rule_groups(helm_built) -> None:
    (rule,) = [o for o in render(MONITORING) if o["kind"] == "PrometheusRule"]
    plain = yaml.safe_load((MONITORING / RULE_FILE).read_text())
    assert plain == {"groups": rule["spec"]["groups"]}
    assert yaml.safe_load(monitoring_files()[RULE_FILE]) == plain


def test_promtool_checks_the_rule_file(promtool_built) -> None:
    path = MONITORING / RULE_FILE
    result = run_promtool(["check", "rules", "--lint=all", "--lint-fatal", str(path)])
    assert f"SUCCESS: {len(rules.rules())} rules found" in result.stdout


def test_promtool_checks_the_scrape_config_and_the_rule_file_it_names(promtool_built) -> None:
    result = run_promtool(["check", "config", str(rules.SCRAPE_CONFIG)])
    assert "SUCCESS: 1 rule files found" in result.stdout
    assert f"SUCCESS: {len(rules.rules())} rules found" in result.stdout


def test_promtool_runs_the_rules_unit_tests(promtool_built) -> None:
    result = run_promtool(["test", "rules", str(UNIT_TESTS)])
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_fail_rules_that_miss_a_series_first_sample(
    promtool_built, tmp_path: Path
) -> None:
    """Guards the unit tests: plain increase() (the chart's former rules) sees no rise in
    a series' first sample, which is where a watcher's first event of a kind lands."""
    tree = tmp_path / "tests" / "helm" / "monitoring"
    deploy = tmp_path / "deploy" / "monitoring"
    tree.mkdir(parents=True)
    deploy.mkdir(parents=True)
    shutil.copy(UNIT_TESTS, tree)
    lines = (MONITORING / RULE_FILE).read_text().splitlines(keepends=True)
    plain_increase = [line for line in lines if not line.lstrip().startswith("or sum by")]
    assert len(plain_increase) == len(lines) - 4
    (deploy / RULE_FILE).write_text("".join(plain_increase))
    with pytest.raises(PromtoolError) as failed:
        run_promtool(["test", "rules", str(tree / UNIT_TESTS.name)])
    for missed in ("OomdumpHeapCaptured", "OomdumpCaptureMissed", "OomdumpUploadFailing"):
        assert f"alertname: {missed}, time:" in str(failed.value)


def test_the_watcher_job_labels_what_the_alerts_group_by() -> None:
    assert {"namespace", "pod"} <= rules.target_labels(rules.WATCHER_JOB)


@pytest.mark.cgroup
@pytest.mark.s3
def test_every_metric_label_and_value_the_rules_use_is_served(
    watcher_scrapes: dict[str, Scrape], webhook_scrape: Scrape
) -> None:
    """Against real scrapes: each metric a rule reads is served, each label it names is a
    label of those samples or of the scrape target, each matcher's value occurs."""
    scrapes = [*watcher_scrapes.values(), webhook_scrape]
    served = set().union(*(s.families for s in scrapes))
    samples = [sample for scrape in scrapes for sample in scrape.samples]
    recorded = {r["record"]: r for r in rules.rules() if "record" in r}
    targets = rules.target_labels(rules.WATCHER_JOB) | rules.target_labels(rules.WEBHOOK_JOB)
    for rule in rules.rules():
        use = rules.use_of(rule)
        name = rule.get("alert") or rule["record"]
        assert use.metrics | use.recorded, name
        assert use.metrics <= served, (name, use.metrics - served)
        assert use.recorded <= set(recorded), (name, use.recorded - set(recorded))
        allowed = set(targets)
        allowed |= {label for s in samples if s.name in use.metrics for label in s.labels}
        for series in use.recorded:
            allowed |= rules.grouping_labels(recorded[series]["expr"])
        assert use.labels <= allowed, (name, use.labels - allowed)
        for metric, label, value in use.matchers:
            raw = rules.use_of(recorded[metric]).metrics if metric in recorded else {metric}
            seen = {s.labels.get(label) for s in samples if s.name in raw}
            assert value in seen, (name, metric, label, value, seen)


@pytest.mark.cgroup
@pytest.mark.s3
def test_the_unit_tests_series_are_shaped_like_real_scrapes(
    watcher_scrapes: dict[str, Scrape], webhook_scrape: Scrape
) -> None:
    """The hand-written unit tests use only names, labels and reasons real watchers and
    the webhook serve, plus the target labels of the scrape config."""
    samples = [s for scrape in [*watcher_scrapes.values(), webhook_scrape] for s in scrape.samples]
    labels = {(s.name, label) for s in samples for label in s.labels}
    values = {(s.name, label, value) for s in samples for label, value in s.labels.items()}
    targets = rules.target_labels(rules.WATCHER_JOB) | rules.target_labels(rules.WEBHOOK_JOB)
    written = yaml.safe_load(UNIT_TESTS.read_text())
    series = [s["series"] for test in written["tests"] for s in test["input_series"]]
    assert len(series) >= 15
    for text in series:
        name, _, inner = text.partition("{")
        pairs = dict(rules._MATCHER.findall(inner))
        assert name in {s.name for s in samples}, text
        for label, value in pairs.items():
            if label in targets:
                continue
            assert (name, label) in labels, text
            if label in ("reason", "kind", "outcome") and value:
                assert (name, label, value) in values, (text, label, value)


@pytest.mark.cgroup
@pytest.mark.s3
def test_real_scrapes_fire_the_alerts_meant_for_them(
    watcher_scrapes: dict[str, Scrape], webhook_scrape: Scrape, tmp_path: Path
) -> None:
    """The real watchers' and webhook's series, each born with its scraped value: promtool
    fires exactly the alerts meant for them (a capture, failed captures where nothing was
    saved, a miss, a failing upload; nothing for the idle pod or the healthy webhook), and
    none once 10 minutes have passed."""
    alerts = rules.expected_alerts(watcher_scrapes, webhook_scrape)
    assert {(alert, pod) for alert, pod, _ in alerts} == {
        ("OomdumpHeapCaptured", "api-0"),
        ("OomdumpHeapCaptured", "batch-0"),
        ("OomdumpUploadFailing", "batch-0"),
        ("OomdumpCaptureFailed", "worker-0"),
        ("OomdumpCaptureMissed", "worker-0"),
    }
    assert ("OomdumpCaptureFailed", "worker-0", "http-404") in alerts
    assert ("OomdumpCaptureMissed", "worker-0", "no-port-yet") in alerts
    # The pods that captured also failed a fetch (their silent port): no alert for that.
    for pod in ("api-0", "batch-0"):
        failures = {
            s.labels["reason"] for s in watcher_scrapes[pod].samples if "failures" in s.name
        }
        assert "timeout" in failures, pod
    test_file = tmp_path / "real.test.yaml"
    test_file.write_text(yaml.safe_dump(rules.unit_test(watcher_scrapes, webhook_scrape, alerts)))
    result = run_promtool(["test", "rules", str(test_file)])
    assert "SUCCESS" in result.stdout
