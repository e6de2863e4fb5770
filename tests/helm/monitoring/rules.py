"""The alert rules read for their tests: what each rule selects and groups by, and a
promtool unit test written from real scrapes."""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from testinfra.helm_base import MONITORING, RULE_FILE

from .real_scrapes import NAMESPACE, Sample, Scrape

RULES = MONITORING / RULE_FILE
SCRAPE_CONFIG = MONITORING / "prometheus-scrape.yaml"
WATCHER_JOB = "oomdump-watcher"
WEBHOOK_JOB = "oomdump-webhook"
# Prometheus adds these to every target itself.
AUTOMATIC_LABELS = frozenset({"job", "instance"})

_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_GROUPING = re.compile(r"\b(?:by|on|without|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*"([^"]*)"')
_TEMPLATE_LABEL = re.compile(r"\{\{\s*\$labels\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class Use:
    """What one rule reads: raw metrics, recorded series, the labels it names, and the
    (metric, label, value) of each matcher."""

    metrics: frozenset[str]
    recorded: frozenset[str]
    labels: frozenset[str]
    matchers: frozenset[tuple[str, str, str]]


def rules(path: Path = RULES) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for found in _GROUPING.findall(expr) for label in found.split(",")} - {""}


def use_of(rule: dict[str, Any]) -> Use:
    expr = rule["expr"]
    names = set(_NAME.findall(re.sub(r'"[^"]*"', '""', expr)))
    texts = " ".join(rule.get("annotations", {}).values())
    matchers = {
        (metric, label, value)
        for metric, inside in _SELECTOR.findall(expr)
        for label, value in _MATCHER.findall(inside)
    }
    return Use(
        metrics=frozenset(n for n in names if n.startswith("oomdump_")),
        recorded=frozenset(n for n in names if ":" in n),
        labels=frozenset(
            grouping_labels(expr)
            | {label for _, label, _ in matchers}
            | set(_TEMPLATE_LABEL.findall(texts))
        ),
        matchers=frozenset(matchers),
    )


def expand(template: str, labels: dict[str, str]) -> str:
    """An annotation as Prometheus writes it for `labels` (the rules use no other action)."""
    text = _TEMPLATE_LABEL.sub(lambda m: labels[m.group(1)], template)
    if "{{" in text:
        raise ValueError(f"an annotation action other than $labels: {template!r}")
    return text


def target_labels(job: str) -> set[str]:
    """The labels the scrape config's `job` gives its targets."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    (found,) = [c for c in config["scrape_configs"] if c["job_name"] == job]
    written = {r["target_label"] for r in found["relabel_configs"] if "target_label" in r}
    return {label for label in written if not label.startswith("__")} | AUTOMATIC_LABELS


# -- a promtool unit test from real scrapes ------------------------------------------------

BORN = 4  # minutes: each real series appears then, with the value it was scraped with
AFTER = 30  # minutes the series last


def _series(sample: Sample, target: dict[str, str], counter: bool) -> dict[str, str]:
    labels = {**sample.labels, **target}
    inner = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    values = f"_x{BORN} {sample.value:g}x{AFTER}" if counter else f"{sample.value:g}x{BORN + AFTER}"
    return {"series": f"{sample.name}{{{inner}}}", "values": values}


def input_series(pods: dict[str, Scrape], webhook: Scrape) -> list[dict[str, str]]:
    """Every sample of every scrape, with the labels the scrape configs give its target;
    counters born at BORN minutes, as a watcher's series are at their first event."""
    found = []
    for number, (pod, scrape) in enumerate(sorted(pods.items())):
        target = {
            "namespace": NAMESPACE,
            "pod": pod,
            "container": "oomdump-sidecar",
            "job": WATCHER_JOB,
            "instance": f"10.1.0.{number + 10}:19100",
        }
        found += [_series(s, target, s.name.endswith("_total")) for s in scrape.samples]
    target = {
        "namespace": "oomdump-system",
        "pod": "oomdump-webhook-0",
        "job": WEBHOOK_JOB,
        "instance": "10.1.0.2:8443",
    }
    found += [_series(s, target, s.name.endswith("_total")) for s in webhook.samples]
    return found


def _values(scrape: Scrape, name: str, label: str, **where: str) -> set[str]:
    return {
        s.labels[label]
        for s in scrape.samples
        if s.name == name and s.value > 0 and all(s.labels.get(k) == v for k, v in where.items())
    }


def expected_alerts(pods: dict[str, Scrape], webhook: Scrape) -> set[tuple[str, str, str]]:
    """(alert, pod, reason) the rules are meant to fire right after the scrapes' events:
    every capture, miss and failed upload; failures only where no capture was saved, failed
    uploads only where none succeeded; the webhook's when its values say so."""
    alerts = set()
    for pod, scrape in pods.items():
        captured = bool(_values(scrape, "oomdump_captures_total", "kind"))
        uploaded = bool(_values(scrape, "oomdump_uploads_total", "reason", outcome="uploaded"))
        if captured:
            alerts.add(("OomdumpHeapCaptured", pod, ""))
        else:
            for reason in _values(scrape, "oomdump_capture_failures_total", "reason"):
                alerts.add(("OomdumpCaptureFailed", pod, reason))
        for reason in _values(scrape, "oomdump_missed_total", "reason"):
            alerts.add(("OomdumpCaptureMissed", pod, reason))
        if not uploaded:
            for reason in _values(scrape, "oomdump_uploads_total", "reason", outcome="failed"):
                alerts.add(("OomdumpUploadFailing", pod, reason))
    gauges = {s.name: s.value for s in webhook.samples if not s.labels}
    if gauges["oomdump_webhook_defaults_stale"] > 0:
        alerts.add(("OomdumpWebhookDefaultsRefused", "", ""))
    if gauges["oomdump_webhook_certificate_not_after_seconds"] - 60 * (BORN + 1) < 7 * 86400:
        alerts.add(("OomdumpWebhookCertificateExpiring", "", ""))
    return alerts


def unit_test(
    pods: dict[str, Scrape], webhook: Scrape, alerts: set[tuple[str, str, str]]
) -> dict[str, Any]:
    """A promtool test file: `alerts` fire right after BORN, none 20 minutes later."""
    by_name = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    soon, late = [], []
    for name, rule in sorted(by_name.items()):
        expected = []
        for alert, pod, reason in sorted(alerts):
            if alert != name:
                continue
            labels = {**rule.get("labels", {})}
            if pod:
                labels |= {"namespace": NAMESPACE, "pod": pod}
            if reason:
                labels["reason"] = reason
            context = {**labels, "alertname": name}
            annotations = {k: expand(v, context) for k, v in rule["annotations"].items()}
            expected.append({"exp_labels": labels, "exp_annotations": annotations})
        soon.append({"eval_time": f"{BORN + 1}m", "alertname": name, "exp_alerts": expected})
        late.append({"eval_time": f"{BORN + 20}m", "alertname": name, "exp_alerts": []})
    return {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "real scrapes",
                "interval": "1m",
                "input_series": input_series(pods, webhook),
                "alert_rule_test": soon + late,
            }
        ],
    }
