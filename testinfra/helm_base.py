"""deploy/base, rendered from the Helm chart: one source for both ways to install.

`python -m testinfra.helm_base` (`make render-base`) regenerates the chart's generated
files (testinfra/helm_schema.py), then writes every file of deploy/base from `helm template`
of the chart's defaults with BASE_VALUES: one file per chart template, the defaults
ConfigMap as `defaults.yaml` (operators edit it, kustomize generates the ConfigMap), and a
kustomization.yaml whose `images` entry keeps `kustomize edit set image` working.
tests/helm/test_one_source.py fails when deploy/base differs from what this writes.
"""

import argparse
import re
import sys
from pathlib import Path

import yaml

from testinfra import helm_schema
from testinfra.helm import CHART, template_text

BASE = CHART.parents[1] / "base"
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
HEADER = (
    "# Generated from deploy/helm/oomdump by `make render-base`: edit the chart, not this"
    " file.\n"
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


def differences(folder: Path = BASE) -> list[str]:
    """Files of `folder` that differ from what render-base writes, missing or extra."""
    expected = base_files()
    present = {p.name for p in folder.iterdir() if p.is_file()}
    found = [f"{name}: missing" for name in sorted(set(expected) - present)]
    found += [f"{name}: not rendered from the chart" for name in sorted(present - set(expected))]
    for name in sorted(set(expected) & present):
        if (folder / name).read_text() != expected[name]:
            found.append(f"{name}: differs")
    return found


def write(folder: Path = BASE) -> None:
    """Replace every file of `folder` with what the chart renders."""
    expected = base_files()
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        if stale.is_file() and stale.name not in expected:
            stale.unlink()
    for name, text in expected.items():
        (folder / name).write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report differences")
    args = parser.parse_args(argv)
    if args.check:
        stale = [f"{p}: differs" for p in helm_schema.stale()] + differences()
        for line in stale:
            print(line, file=sys.stderr)
        return 1 if stale else 0
    for path in helm_schema.write():
        print(f"wrote {path}")
    write()
    print(f"wrote {BASE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
