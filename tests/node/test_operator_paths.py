"""What else an operator meets on a real node once deploy/ is installed: pods that must
run untouched (opted out, in an unlabelled namespace, or created while the webhook has no
replica: `failurePolicy: Ignore`), the native sidecar mode with a Job that completes, and
an app OOM-killed within a second of each start (CrashLoopBackOff) whose heap is still
captured on one of its lives, a dump that stays in a pod's spool (no bucket) listed and
fetched with `kubectl oomdump` through the API server, and the least-privilege watcher
capturing under the real runtime.

Each test that changes the webhook (scale, SIDECAR_MODE) puts it back and waits until it
injects again, so the tests stand alone in any order.
"""

import datetime
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from testinfra.cluster import Cluster
from testinfra.image import LEAK_IMAGE, OOMDUMP_IMAGE, leak_binary
from testinfra.minio import MinioServer
from testinfra.node_deploy import WEBHOOK_DEPLOYMENT, WEBHOOK_NAMESPACE, apply
from tests.cli.run import script
from tests.e2e.pods import env_of
from tests.e2e.pods import sidecar as sidecar_of
from tests.node.story import (
    RUN_TIMEOUT,
    app_running,
    container_status,
    pod_summary,
    poll,
    wait_for_webhook_rollout,
    wait_until_injecting,
)
from tests.sidecar.harness import pprof_top

pytestmark = pytest.mark.node

NAMESPACE = "oomdump-paths"
PLAIN_NAMESPACE = "oomdump-paths-plain"
BUCKET = "oomdump-paths"
LIVES_TIMEOUT = 240.0  # CrashLoopBackOff waits 10 s, 20 s, 40 s… between lives
# Requests well below the limits: the tests' pods share one 2-CPU node (a limit alone is
# also the request, and the scheduler would soon find no CPU left).
SMALL = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}}
LEAKING = {
    "requests": {"cpu": "10m", "memory": "64Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi"},
}
LEAK_ARGS_SLOW = ["-port=8080", "-mode=gradual", "-start=1048576", "-step=1048576", "-interval=1h"]
LEAK_ARGS_FAST = ["-port=8080", "-mode=gradual", "-step=16777216", "-interval=50ms"]


def _namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _app_pod(name: str, *, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A small real Go app that runs until deleted (it retains 1 MiB an hour)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "app",
                    "image": LEAK_IMAGE,
                    "imagePullPolicy": "Never",
                    "args": LEAK_ARGS_SLOW,
                    "resources": SMALL,
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def namespaces(
    cluster: Cluster, minio: MinioServer, webhook_rollout: list[dict[str, Any]]
) -> Iterator[client.CoreV1Api]:
    """An opted-in namespace (with S3 credentials and a bucket) and an unlabelled one."""
    core = client.CoreV1Api(cluster.api_client())
    apply(
        cluster.api_client(),
        [
            _namespace(
                NAMESPACE,
                {
                    "oomdump.io/inject": "enabled",
                    "pod-security.kubernetes.io/enforce": "privileged",
                },
            ),
            _namespace(PLAIN_NAMESPACE, {}),
        ],
    )
    for namespace in (NAMESPACE, PLAIN_NAMESPACE):
        poll(
            f"the default ServiceAccount of {namespace}",
            30,
            lambda ns=namespace: True if core.list_namespaced_service_account(ns).items else None,
        )
    minio.make_bucket(BUCKET)
    core.create_namespaced_secret(
        NAMESPACE,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="oomdump-s3"),
            string_data={
                "AWS_ACCESS_KEY_ID": minio.access_key,
                "AWS_SECRET_ACCESS_KEY": minio.secret_key,
            },
        ),
    )
    wait_until_injecting(core, NAMESPACE)
    yield core
    for namespace in (NAMESPACE, PLAIN_NAMESPACE):
        core.delete_namespace(namespace, grace_period_seconds=0)


def _untouched(pod: client.V1Pod) -> None:
    assert [c.name for c in pod.spec.containers] == ["app"], pod.spec.containers
    assert not pod.spec.init_containers
    assert not pod.spec.share_process_namespace
    assert not any(k.startswith("oomdump.io/") for k in pod.metadata.annotations or {})


def test_an_opted_out_pod_and_a_pod_of_an_unlabelled_namespace_run_untouched(
    namespaces: client.CoreV1Api,
) -> None:
    core = namespaces
    core.create_namespaced_pod(
        NAMESPACE, _app_pod("opted-out", labels={"oomdump.io/inject": "disabled"})
    )
    core.create_namespaced_pod(PLAIN_NAMESPACE, _app_pod("plain"))
    _untouched(app_running(core, NAMESPACE, "opted-out"))
    _untouched(app_running(core, PLAIN_NAMESPACE, "plain"))
    # The same pod without the opt-out label is injected: the webhook is serving.
    assert any(
        c.name == "oomdump-sidecar"
        for c in core.create_namespaced_pod(
            NAMESPACE, _app_pod("control"), dry_run="All"
        ).spec.containers
    )


def _scale_webhook(apps: client.AppsV1Api, replicas: int) -> None:
    apps.patch_namespaced_deployment_scale(
        WEBHOOK_DEPLOYMENT, WEBHOOK_NAMESPACE, {"spec": {"replicas": replicas}}
    )


def test_with_the_webhook_scaled_to_zero_new_pods_are_still_created_and_run(
    cluster: Cluster, namespaces: client.CoreV1Api
) -> None:
    core = namespaces
    apps = client.AppsV1Api(cluster.api_client())
    _scale_webhook(apps, 0)
    try:

        def gone() -> bool | None:
            pods = core.list_namespaced_pod(
                WEBHOOK_NAMESPACE, label_selector="app.kubernetes.io/name=oomdump-webhook"
            ).items
            return True if not pods else None

        poll("every webhook pod gone", RUN_TIMEOUT, gone)
        # failurePolicy: Ignore — the API server cannot reach the webhook and admits the pod.
        core.create_namespaced_pod(NAMESPACE, _app_pod("while-down"))
        _untouched(app_running(core, NAMESPACE, "while-down"))
    finally:
        _scale_webhook(apps, 2)
        wait_for_webhook_rollout(apps, core)
    wait_until_injecting(core, NAMESPACE)


def _set_sidecar_mode(apps: client.AppsV1Api, mode: str) -> None:
    """`kubectl -n oomdump-system set env deployment/oomdump-webhook SIDECAR_MODE=<mode>`."""
    apps.patch_namespaced_deployment(
        WEBHOOK_DEPLOYMENT,
        WEBHOOK_NAMESPACE,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "webhook", "env": [{"name": "SIDECAR_MODE", "value": mode}]}
                        ]
                    }
                }
            }
        },
    )


def _job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "app",
                            # The image's Debian base has a shell; the job's work is a pause.
                            "image": OOMDUMP_IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["/bin/sh", "-c", "sleep 5"],
                            "resources": SMALL,
                        }
                    ],
                }
            },
        },
    }


def test_native_sidecar_mode_a_job_with_the_watcher_as_restartable_init_container_completes(
    cluster: Cluster, namespaces: client.CoreV1Api
) -> None:
    core = namespaces
    apps = client.AppsV1Api(cluster.api_client())
    batch = client.BatchV1Api(cluster.api_client())
    _set_sidecar_mode(apps, "native")
    try:
        wait_for_webhook_rollout(apps, core)

        def native() -> client.V1Pod | None:
            pod = wait_until_injecting(core, NAMESPACE)
            return pod if pod.spec.init_containers else None

        poll("the rolled webhook injecting natively", RUN_TIMEOUT, native)
        apply(cluster.api_client(), [_job("native-job")])

        def finished() -> client.V1Job | None:
            job = batch.read_namespaced_job("native-job", NAMESPACE)
            return job if job.status.succeeded or job.status.failed else None

        job = poll("the Job finished", RUN_TIMEOUT, finished)
        (pod,) = core.list_namespaced_pod(NAMESPACE, label_selector="job-name=native-job").items
        assert job.status.succeeded == 1, pod_summary(pod)
        (watcher,) = pod.spec.init_containers
        assert watcher.name == "oomdump-sidecar"
        assert watcher.restart_policy == "Always"
        assert [c.name for c in pod.spec.containers] == ["app"]
        (status,) = pod.status.init_container_statuses
        # The kubelet started the watcher before the app and stopped it after.
        assert status.restart_count == 0, pod_summary(pod)
        assert status.state.terminated is not None or status.state.running is not None
    finally:
        _set_sidecar_mode(apps, "container")
        wait_for_webhook_rollout(apps, core)
    wait_until_injecting(core, NAMESPACE)


def _crashloop_pod(name: str) -> dict[str, Any]:
    """The example leak, fast: 16 MiB every 50 ms reaches its 256 MiB limit within about a
    second of each start."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "annotations": {
                "oomdump.io/critical": "60",
                "oomdump.io/watch-time": "20ms",
                "oomdump.io/cooldown": "1s",
                "oomdump.io/ports": "8080",
                "oomdump.io/bucket": BUCKET,
            },
        },
        "spec": {
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "app",
                    "image": LEAK_IMAGE,
                    "imagePullPolicy": "Never",
                    "args": LEAK_ARGS_FAST,
                    "resources": LEAKING,
                }
            ],
        },
    }


def _life_seconds(state: client.V1ContainerStateTerminated) -> float:
    started: datetime.datetime = state.started_at
    finished: datetime.datetime = state.finished_at
    return (finished - started).total_seconds()


def test_an_app_oom_killed_within_a_second_of_each_start_is_captured_on_one_of_its_lives(
    namespaces: client.CoreV1Api, minio: MinioServer
) -> None:
    core = namespaces
    name = "startup-oom"
    core.create_namespaced_pod(NAMESPACE, _crashloop_pod(name))
    pattern = re.compile(rf"^{NAMESPACE}/{name}/[0-9T:.\-Z]+-go-memory-leak-(\d+)-8080\.pb\.gz$")
    s3 = minio.client()
    lives: list[float] = []

    def captured() -> str | None:
        pod = core.read_namespaced_pod(name, NAMESPACE)
        app = container_status(pod, "app")
        if app is not None and app.last_state and app.last_state.terminated:
            terminated = app.last_state.terminated
            assert terminated.reason == "OOMKilled", pod_summary(pod)
            lives.append(_life_seconds(terminated))
        listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{NAMESPACE}/{name}/")
        keys = [item["Key"] for item in listing.get("Contents", [])]
        dumps = [key for key in keys if pattern.match(key)]
        return dumps[0] if dumps and lives else None

    try:
        key = poll("a start-up OOM captured", LIVES_TIMEOUT, captured, every=1.0)
    except TimeoutError as error:
        raise AssertionError(
            f"{error}\n{pod_summary(core.read_namespaced_pod(name, NAMESPACE))}"
        ) from None
    # Each life the kubelet reported lasted about a second (its times have 1 s resolution).
    assert lives and max(lives) <= 2.0, lives
    metadata = json.loads(
        s3.get_object(Bucket=BUCKET, Key=key.removesuffix(".pb.gz") + ".json")["Body"].read()
    )
    assert metadata["limit"] == 256 * 1024 * 1024
    assert metadata["comm"] == "go-memory-leak"
    assert metadata["usage"] >= 0.6 * metadata["limit"]
    watcher = container_status(core.read_namespaced_pod(name, NAMESPACE), "oomdump-sidecar")
    assert watcher is not None and watcher.restart_count == 0


def _one_life_pod(name: str) -> dict[str, Any]:
    """The example leak, one life (restartPolicy Never) and no bucket: its dump stays in the
    watcher's spool, which keeps running after the app is OOM-killed."""
    pod = _crashloop_pod(name)
    del pod["metadata"]["annotations"]["oomdump.io/bucket"]
    pod["spec"]["restartPolicy"] = "Never"
    pod["spec"]["containers"][0]["args"] = [*LEAK_ARGS_FAST[:-1], "-interval=200ms"]
    return pod


def _kubectl_oomdump(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed kubectl plugin, as an operator runs it (their kubeconfig: the admin's)."""
    environment = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    for variable in ("OOMDUMP_BUCKET", "OOMDUMP_DIR", "AWS_ACCESS_KEY_ID"):
        environment.pop(variable, None)
    return subprocess.run(
        [str(script("kubectl-oomdump")), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_dump_still_in_a_pods_spool_is_listed_and_fetched_through_the_api(
    cluster: Cluster, namespaces: client.CoreV1Api, tmp_path: Path
) -> None:
    core = namespaces
    name = "spooled"
    core.create_namespaced_pod(NAMESPACE, _one_life_pod(name))

    def oom_killed() -> bool | None:
        app = container_status(core.read_namespaced_pod(name, NAMESPACE), "app")
        terminated = app.state.terminated if app is not None else None
        return True if terminated is not None and terminated.reason == "OOMKilled" else None

    try:
        poll("the app OOM-killed", LIVES_TIMEOUT, oom_killed)
    except TimeoutError as error:
        raise AssertionError(
            f"{error}\n{pod_summary(core.read_namespaced_pod(name, NAMESPACE))}"
        ) from None

    # No bucket anywhere: `list -n NS POD` reads the pod's spool through the API server.
    def listed() -> list[dict[str, Any]] | None:
        result = _kubectl_oomdump(cluster, "dumps", "list", "-n", NAMESPACE, name, "-o", "json")
        assert result.returncode == 0, result.stderr
        records = json.loads(result.stdout)
        return records if records and records[0]["top"] else None

    # One life: each capture saves two profiles when it can (the first fetch, then ?gc=1),
    # and the process stays over CRITICAL past its 1 s cooldown, so it may be captured again.
    records = poll("the spooled dump listed with its top", 60, listed)
    assert len({r["pid"] for r in records}) == 1, records
    record = records[0]
    assert record["pod"] == name and record["namespace"] == NAMESPACE
    assert record["url"].startswith(f"pod {NAMESPACE}/{name} (spool)")
    assert record["top"][0]["name"] == "main.leakDocuments", record["top"]
    table = _kubectl_oomdump(cluster, "dumps", "list", "-n", NAMESPACE, name)
    assert table.returncode == 0 and "main.leakDocuments" in table.stdout, table

    fetched = _kubectl_oomdump(
        cluster, "dumps", "get", record["key"], "--in-pod", f"{NAMESPACE}/{name}",
        "--metadata", "-o", str(tmp_path),
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    (profile,) = tmp_path.glob("*.pb.gz")
    assert profile.stat().st_size == record["bytes"]
    assert "main.leakDocuments" in pprof_top(leak_binary(), profile)
    (metadata,) = tmp_path.glob("*.json")
    assert json.loads(metadata.read_text())["pod"] == name

    # Clear errors: an unknown pod, and a pod with no watcher.
    missing = _kubectl_oomdump(cluster, "dumps", "list", "--in-pod", f"{NAMESPACE}/nope")
    assert missing.returncode == 1 and f"pod {NAMESPACE}/nope not found" in missing.stderr
    plain = _kubectl_oomdump(cluster, "dumps", "list", "--in-pod", f"{PLAIN_NAMESPACE}/plain")
    assert plain.returncode == 1 and "no running oomdump-sidecar" in plain.stderr, plain.stderr


def _set_privilege_profile(core: client.CoreV1Api, profile: str) -> None:
    """Edit the defaults ConfigMap as an operator would; the webhook re-reads it."""
    config_map = core.read_namespaced_config_map("oomdump-sidecar-defaults", WEBHOOK_NAMESPACE)
    text = config_map.data["defaults.yaml"]
    lines = [
        f"privilegeProfile: {profile}" if line.startswith("privilegeProfile:") else line
        for line in text.splitlines()
    ]
    assert lines != text.splitlines() or f"privilegeProfile: {profile}" in text
    core.patch_namespaced_config_map(
        "oomdump-sidecar-defaults",
        WEBHOOK_NAMESPACE,
        {"data": {"defaults.yaml": "\n".join(lines) + "\n"}},
    )


def _injected_profile(core: client.CoreV1Api) -> str:
    security = sidecar_of(wait_until_injecting(core, NAMESPACE)).security_context
    return "privileged" if security.privileged else "least-privilege"


def _wait_for_profile(core: client.CoreV1Api, profile: str) -> None:
    """Each webhook replica re-reads the ConfigMap when the kubelet updates its volume, not
    at once: wait until 12 injections in a row (the API server picks a replica at random
    for each) carry `profile`."""
    in_a_row = [0]

    def settled() -> bool | None:
        in_a_row[0] = in_a_row[0] + 1 if _injected_profile(core) == profile else 0
        return True if in_a_row[0] >= 12 else None

    poll(f"every webhook replica injecting {profile} watchers", RUN_TIMEOUT, settled, every=0.2)


def test_the_least_privilege_watcher_captures_under_the_real_runtime(
    namespaces: client.CoreV1Api, minio: MinioServer
) -> None:
    """containerd's read-only cgroupfs and default seccomp profile, SYS_PTRACE only: the
    watcher polls adaptively and still saves the leak's heap before the kernel's kill."""
    core = namespaces
    _set_privilege_profile(core, "least-privilege")
    try:
        _wait_for_profile(core, "least-privilege")
        name = "least-privilege"
        pod = _one_life_pod(name)
        pod["metadata"]["annotations"]["oomdump.io/bucket"] = BUCKET
        created = core.create_namespaced_pod(NAMESPACE, pod)
        watcher = sidecar_of(created)
        assert watcher.security_context.privileged is False
        assert watcher.security_context.capabilities.add == ["SYS_PTRACE"]
        assert env_of(watcher)["DETECT_MODE"] == "adaptive"
        pattern = re.compile(rf"^{NAMESPACE}/{name}/[0-9T:.\-Z]+-go-memory-leak-\d+-8080\.pb\.gz$")
        s3 = minio.client()

        def dumped() -> str | None:
            listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{NAMESPACE}/{name}/")
            keys = [i["Key"] for i in listing.get("Contents", []) if pattern.match(i["Key"])]
            return keys[0] if keys else None

        try:
            key = poll("the least-privilege capture uploaded", LIVES_TIMEOUT, dumped)
        except TimeoutError as error:
            raise AssertionError(
                f"{error}\n{pod_summary(core.read_namespaced_pod(name, NAMESPACE))}"
            ) from None
        metadata = json.loads(
            s3.get_object(Bucket=BUCKET, Key=key.removesuffix(".pb.gz") + ".json")["Body"].read()
        )
        assert metadata["detect_mode"] == "adaptive"
        assert metadata["usage"] >= 0.6 * metadata["limit"]

        def oom_killed() -> bool | None:
            app = container_status(core.read_namespaced_pod(name, NAMESPACE), "app")
            terminated = app.state.terminated if app is not None else None
            return True if terminated is not None and terminated.reason == "OOMKilled" else None

        poll("the app OOM-killed", LIVES_TIMEOUT, oom_killed)
        running = container_status(core.read_namespaced_pod(name, NAMESPACE), "oomdump-sidecar")
        assert running is not None and running.restart_count == 0
    finally:
        _set_privilege_profile(core, "privileged")
        _wait_for_profile(core, "privileged")
