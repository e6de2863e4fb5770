"""Helpers for the node story: deploy/ and deploy/examples applied as the README says (the
image names pointed at the images built here), and bounded polls on real pods."""

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client

from testinfra.kustomize import kustomize_binary, render

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def prepared_copy(source: Path, dest: Path, images: dict[str, str]) -> Path:
    """`source` copied to `dest`, with `kustomize edit set image OLD=NEW` run in each folder
    of it that names OLD (deploy/base for the oomdump image, as the README says)."""
    shutil.copytree(source, dest)
    for kustomization in sorted(dest.rglob("kustomization.yaml")):
        text = kustomization.read_text()
        for old, new in images.items():
            if f"name: {old}" in text:
                subprocess.run(
                    [str(kustomize_binary()), "edit", "set", "image", f"{old}={new}"],
                    cwd=kustomization.parent,
                    check=True,
                    capture_output=True,
                    timeout=60,
                )
    return dest


def set_watcher_defaults(deploy: Path, env: dict[str, str]) -> None:
    """Edit deploy/base/defaults.yaml as an operator would (the S3 endpoint and region)."""
    path = deploy / "base" / "defaults.yaml"
    defaults = yaml.safe_load(path.read_text())
    defaults["env"].update(env)
    path.write_text(yaml.safe_dump(defaults))


def rendered(folder: Path) -> list[dict[str, Any]]:
    return render(folder)


def poll(what: str, timeout: float, probe: Callable[[], T | None], every: float = 0.5) -> T:
    """`probe()` until it returns something other than None; fail at `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(every)


def container_status(pod: client.V1Pod, name: str) -> client.V1ContainerStatus | None:
    for status in pod.status.container_statuses or []:
        if status.name == name:
            return status
    return None


def pod_summary(pod: client.V1Pod) -> str:
    """Phase and each container's state, for failure messages."""
    parts = [f"{pod.metadata.name} {pod.status.phase}"]
    for status in (pod.status.init_container_statuses or []) + (
        pod.status.container_statuses or []
    ):
        parts.append(f"{status.name}: restarts={status.restart_count} state={status.state}")
    return "\n".join(parts)
