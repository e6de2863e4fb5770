"""Time POST /notice end to end (TLS, TokenReview, pod read, Event write) against a real
kube-apiserver: `.venv/bin/python -m tests.e2e.measure_notices [N]`. Prints the median and
the worst of N notices per path: a first notice (Event created), repeats (count raised)
and a refused token (TokenReview only)."""

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kubernetes import client

from testinfra.cluster import running_cluster
from testinfra.kustomize import render
from testinfra.webhook_server import DEPLOY_DIR, generate_certs
from tests.e2e.deployed import (
    apply,
    one,
    rule_grants,
    service_account_of,
    wait_for_authorization,
    write_token_kubeconfig,
)
from tests.e2e.notices import app_cgroup, notice_webhook, token_for
from tests.e2e.pods import plain_pod

STATUS = {"oomdump.io/status": "{}"}  # as if injected (the webhook is not registered here)


def _body(pod: client.V1Pod, pid: int) -> bytes:
    from sidecar.notify import CAPTURED, Notice

    notice = Notice(CAPTURED, pid, "leaky", app_cgroup(), 236 << 20, 256 << 20, 92.2, "s3://b/k")
    return notice.body(pod.metadata.name, pod.metadata.namespace)


def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as scratch, running_cluster() as cluster:
        folder = Path(scratch)
        objects = render(DEPLOY_DIR)
        api = cluster.api_client()
        apply(api, objects)
        identity = service_account_of(objects)
        for grant in rule_grants(one(objects, "ClusterRole", "oomdump-webhook-notices"), None):
            wait_for_authorization(api, identity, grant, allowed=True)
        kubeconfig = write_token_kubeconfig(cluster, identity, folder / "kubeconfig")
        certs = generate_certs(folder / "certs")
        namespace = f"bench-{uuid.uuid4().hex[:6]}"
        cluster.create_namespace(namespace)
        core = client.CoreV1Api(api)
        burst = ("--notice-burst", str(runs * 4), "--notice-per-minute", "1")
        with notice_webhook(certs, kubeconfig, "i", folder / "webhook.log", *burst) as webhook:
            timings: dict[str, list[float]] = {"created": [], "aggregated": [], "refused": []}
            for _ in range(runs):
                pod = core.create_namespaced_pod(
                    namespace, plain_pod(f"p-{uuid.uuid4().hex[:6]}", annotations=STATUS)
                )
                token = token_for(core, namespace, "default", ["oomdump"], pod)
                for outcome, sent_token in (
                    ("created", token), ("aggregated", token), ("aggregated", token),
                    ("refused", token + "x"),
                ):  # fmt: skip
                    started = time.perf_counter()
                    status, answer = webhook.post(_body(pod, 7), sent_token)
                    took = (time.perf_counter() - started) * 1000
                    expected = 401 if outcome == "refused" else 200
                    assert status == expected, answer
                    timings[outcome].append(took)
            for outcome, values in timings.items():
                print(
                    f"{outcome:>10}: n={len(values)} median {statistics.median(values):.1f} ms"
                    f" max {max(values):.1f} ms"
                )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
