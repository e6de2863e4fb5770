"""deploy/base, rendered from the Helm chart: one source for both ways to install.

`python -m testinfra.helm_base` (`make render-base`) regenerates the chart's generated
files (testinfra/helm_schema.py), then writes every file of deploy/base from `helm template`
of the chart's defaults with BASE_VALUES: one file per chart template, the defaults
ConfigMap as `defaults.yaml` (operators edit it, kustomize generates the ConfigMap), and a
kustomization.yaml whose `images` entry keeps `kustomize edit set image` working.
It also writes deploy/monitoring: the chart's PrometheusRule and ServiceMonitor rendered
with MONITORING_VALUES, and the same rules as a plain Prometheus rule file.
tests/helm/test_one_source.py fails when deploy/base differs from what this writes,
tests/helm/monitoring when deploy/monitoring does.
"""

import argparse
import re
import sys
from pathlib import Path

import yaml

from testinfra import helm_schema
from testinfra.helm import CHART, template_text

BASE = CHART.parents[1] / "base"
MONITORING = CHART.parents[1] / "monitoring"
NAMESPACE = "oomdump-system"
# How deploy/base differs from `helm install` with the defaults, and why.
BASE_VALUES = (
    # `kubectl apply -k` has no --create-namespace: the base creates its Namespace.
    "namespace.create=true",
    # kustomize, not Helm, manages these objects.
    "releaseLabels=false",
    # As before the chart: the bootstrap creates the Secret, `kubectl delete -k` leaves it.
    "certificates.bootstrap.ownSecret=false",
)
# The order of `resources:` in kustomization.yaml (kustomize sorts its output itself);
# templates not named here follow in name order.
FILE_ORDER = (
    "namespace.yaml",
    "serviceaccount.yaml",
    "rbac.yaml",
    "service.yaml",
    "deployment.yaml",
    "poddisruptionbudget.yaml",
    "mutatingwebhookconfiguration.yaml",
)
DEFAULTS_TEMPLATE = "configmap.yaml"
# deploy/monitoring: the Prometheus Operator objects, rendered as where their CRDs exist.
MONITORING_VALUES = (
    "metrics.serviceMonitor.enabled=true",
    "metrics.prometheusRule.enabled=true",
    "releaseLabels=false",
)
MONITORING_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)
MONITORING_TEMPLATES = ("prometheusrule.yaml", "servicemonitor.yaml")
RULE_FILE = "oomdump-rules.yaml"
# Written by hand (the chart has no plain Prometheus config); kept by `write`.
MONITORING_HAND_WRITTEN = ("prometheus-scrape.yaml",)
HEADER = (
    "# Generated from deploy/helm/oomdump by `make render-base`: edit the chart, not this file.\n"
)
_SOURCE = re.compile(r"^---\n# Source: oomdump/templates/([^\n]+)\n", re.MULTILINE)

_KUSTOMIZATION = """\
# Generated from deploy/helm/oomdump by `make render-base`: edit the chart, not these
# files. They are `helm template` of the chart's defaults with
{values}
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
{resources}
configMapGenerator:
  # The webhook re-reads this file when it changes, so the name stays fixed (no hash
  # suffix) and editing the ConfigMap needs no rollout.
  - name: oomdump-sidecar-defaults
    namespace: {namespace}
    files:
      - defaults.yaml
    options:
      disableNameSuffixHash: true
      labels:
{labels}
images:
  # `kustomize edit set image {repository}=REGISTRY/oomdump:TAG` changes every
  # container; the replacement below copies it into SIDECAR_IMAGE, so the injected watcher
  # always runs the same build as the webhook.
  - name: {repository}
    newTag: {tag}
replacements:
  - source:
      kind: Deployment
      name: oomdump-webhook
      fieldPath: spec.template.spec.containers.[name=webhook].image
    targets:
      - select:
          kind: Deployment
          name: oomdump-webhook
        fieldPaths:
          - spec.template.spec.containers.[name=webhook].env.[name=SIDECAR_IMAGE].value
"""


_MONITORING_KUSTOMIZATION = """\
# Generated from deploy/helm/oomdump by `make render-base`: edit the chart, not these
# files. They are `helm template` of the chart with
{values}
{apis}
# Needs the Prometheus Operator's CRDs: `kubectl apply -k deploy/monitoring`.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
{resources}
"""

_RULE_FILE_HEADER = """\
# Generated from deploy/helm/oomdump by `make render-base`: edit the chart, not this
# file. The rules of deploy/monitoring/prometheusrule.yaml for a Prometheus without the
# Operator: list this file in prometheus.yml's rule_files, and scrape the watchers and
# the webhook as prometheus-scrape.yaml does (the alerts group by its namespace and pod
# labels). `promtool check rules oomdump-rules.yaml` checks it.
"""


class _RuleFileDumper(yaml.SafeDumper):
    """Multi-line strings (the expressions) as literal blocks, as the chart writes them."""


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_RuleFileDumper.add_representer(str, _represent_text)


def split_by_template(text: str) -> dict[str, str]:
    """`helm template` output as {template file name: its documents}, in output order."""
    parts = _SOURCE.split(text)
    files: dict[str, list[str]] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        files.setdefault(name, []).append(body.rstrip("\n") + "\n")
    return {name: "---\n".join(bodies) for name, bodies in files.items()}


def _chart_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def _chart_version() -> str:
    return str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])


def base_files() -> dict[str, str]:
    """Every file of deploy/base, as {name: text}."""
    rendered = split_by_template(template_text(BASE_VALUES, namespace=NAMESPACE))
    config_map = yaml.safe_load(rendered.pop(DEFAULTS_TEMPLATE))
    files = {name: HEADER + body for name, body in rendered.items()}
    files["defaults.yaml"] = config_map["data"]["defaults.yaml"]
    order = [name for name in FILE_ORDER if name in rendered]
    order += sorted(set(rendered) - set(FILE_ORDER))
    values = _chart_values()
    labels = config_map["metadata"]["labels"]
    files["kustomization.yaml"] = _KUSTOMIZATION.format(
        values="\n".join(f"#   --set {value}" for value in BASE_VALUES),
        resources="\n".join(f"  - {name}" for name in order),
        namespace=NAMESPACE,
        labels="\n".join(f"        {key}: {value}" for key, value in labels.items()),
        repository=values["image"]["repository"],
        tag=values["image"]["tag"] or _chart_version(),
    )
    return files


def monitoring_files() -> dict[str, str]:
    """Every generated file of deploy/monitoring, as {name: text}."""
    text = template_text(MONITORING_VALUES, MONITORING_APIS, namespace=NAMESPACE)
    rendered = split_by_template(text)
    missing = [name for name in MONITORING_TEMPLATES if name not in rendered]
    if missing:
        raise RuntimeError(f"the chart rendered no {', '.join(missing)} with metrics on")
    files = {name: HEADER + rendered[name] for name in MONITORING_TEMPLATES}
    rule = yaml.safe_load(rendered["prometheusrule.yaml"])
    groups = yaml.dump(
        {"groups": rule["spec"]["groups"]},
        Dumper=_RuleFileDumper,
        sort_keys=False,
        width=1000,  # one line per annotation: no break inside a {{ }} action
        allow_unicode=True,
    )
    files[RULE_FILE] = _RULE_FILE_HEADER + groups
    files["kustomization.yaml"] = _MONITORING_KUSTOMIZATION.format(
        values="\n".join(f"#   --set {value}" for value in MONITORING_VALUES),
        apis="\n".join(f"#   --api-versions {api}" for api in MONITORING_APIS),
        resources="\n".join(f"  - {name}" for name in MONITORING_TEMPLATES),
    )
    return files


def differences(
    folder: Path = BASE, expected: dict[str, str] | None = None, kept: tuple[str, ...] = ()
) -> list[str]:
    """Files of `folder` that differ from `expected` (what render-base writes into
    deploy/base when None), missing or extra; `kept` names files written by hand."""
    expected = base_files() if expected is None else expected
    present = {p.name for p in folder.iterdir() if p.is_file()} - set(kept)
    found = [f"{name}: missing" for name in sorted(set(expected) - present)]
    found += [f"{name}: not rendered from the chart" for name in sorted(present - set(expected))]
    for name in sorted(set(expected) & present):
        if (folder / name).read_text() != expected[name]:
            found.append(f"{name}: differs")
    return found


def monitoring_differences(folder: Path = MONITORING) -> list[str]:
    """Files of deploy/monitoring (or `folder`) that differ from what render-base writes."""
    return differences(folder, monitoring_files(), MONITORING_HAND_WRITTEN)


def write(
    folder: Path = BASE, expected: dict[str, str] | None = None, kept: tuple[str, ...] = ()
) -> None:
    """Replace every file of `folder` but `kept` with `expected` (deploy/base when None)."""
    expected = base_files() if expected is None else expected
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        if stale.is_file() and stale.name not in expected and stale.name not in kept:
            stale.unlink()
    for name, text in expected.items():
        (folder / name).write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report differences")
    args = parser.parse_args(argv)
    if args.check:
        stale = [f"{p}: differs" for p in helm_schema.stale()] + differences()
        stale += [f"monitoring/{line}" for line in monitoring_differences()]
        for line in stale:
            print(line, file=sys.stderr)
        return 1 if stale else 0
    for path in helm_schema.write():
        print(f"wrote {path}")
    write()
    print(f"wrote {BASE}")
    write(MONITORING, monitoring_files(), MONITORING_HAND_WRITTEN)
    print(f"wrote {MONITORING}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
