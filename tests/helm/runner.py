"""helm run against one of the tests' API servers, as an operator runs it."""

import os
from pathlib import Path
from typing import Any

import yaml

from testinfra.cluster import Cluster
from testinfra.helm import CHART, run_helm


class Helm:
    """helm against one API server, its state (repositories, cache) in a folder of its own."""

    def __init__(
        self, cluster: Cluster, home: Path, release: str, namespace: str, wait: str = ""
    ) -> None:
        """`wait`: a timeout such as `240s` to wait for the release's pods (a real node);
        empty when no kubelet runs them."""
        self.release = release
        self.namespace = namespace
        self.wait = ["--wait", f"--timeout={wait}"] if wait else ["--wait=false", "--timeout=60s"]
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBE"))},
            "KUBECONFIG": str(cluster.kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str) -> str:
        return run_helm(list(args), env=self.env).stdout

    def install(self, *values: str) -> str:
        return self._change("install", "--create-namespace", *values)

    def upgrade(self, *values: str) -> str:
        return self._change("upgrade", *values)

    def _change(self, verb: str, *values: str) -> str:
        args = [
            verb,
            self.release,
            str(CHART),
            "-n",
            self.namespace,
            "--wait=false",
            "--timeout=60s",
        ]
        for value in values:
            args += ["--set", value] if not value.startswith("--") else [value]
        return self(*args)

    def manifest(self) -> list[dict[str, Any]]:
        text = self("get", "manifest", self.release, "-n", self.namespace)
        return [doc for doc in yaml.safe_load_all(text) if doc]
