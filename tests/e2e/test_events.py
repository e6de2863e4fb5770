"""Notices become Events on the pod, against a real kube-apiserver (marker e2e).

`deploy/` is installed into an API server of this module's own; the webhook runs with a
token the API server issued for its ServiceAccount, so the RBAC that `deploy/` renders
decides every TokenReview, pod read and Event write. The MutatingWebhookConfiguration
`oomdump` is pointed at it, so test pods are really injected, and each watcher token is a
TokenRequest bound to the stored pod with the audience its injected volume asks for.
The real client, `sidecar.notify.Notifier`, sends the notices of the first tests.

A second webhook process with the same credentials stands for the second replica of
`deploy/` (a watcher's retry may reach either), so that a notice applied by one and
repeated to the other is seen to count once through the Event alone.
"""

import io
import json
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sidecar import log
from sidecar.notify import CAPTURED, FAILED, Notice, Notifier
from testinfra.cluster import Cluster
from testinfra.kustomize import render
from testinfra.webhook_server import (
    DEPLOY_DIR,
    WEBHOOK_TIMEOUT_SECONDS,
    generate_certs,
    pointed_at,
    rendered_webhook_configuration,
)
from tests.e2e.deployed import (
    Identity,
    Objects,
    apply,
    one,
    rule_grants,
    service_account_of,
    verb_removed,
    wait_for_authorization,
    write_token_kubeconfig,
)
from tests.e2e.notices import (
    NoticeWebhook,
    answer_losing_relay,
    app_cgroup,
    events_on,
    give_container_id,
    notice_webhook,
    token_for,
    wait_for_events,
)
from tests.e2e.pods import env_of, plain_pod, sidecar

pytestmark = pytest.mark.e2e

IMAGE = "registry.example/oomdump:e2e"
NOTICE_ROLE = "oomdump-webhook-notices"
INJECT_LABEL = {"oomdump.io/inject": "enabled"}
BURST = 6  # notices per pod before the rate limit; the rate is slow enough not to refill
LIVE_TIMEOUT = 30.0
SENT_TIMEOUT = 15.0
RATE = ("--notice-burst", str(BURST), "--notice-per-minute", "0.01")
NOTICE_IDS = "oomdump.io/notice-ids"
MiB = 2**20
TOP = (
    {
        "name": "main.retainInvoiceBatch",
        "flat_bytes": 181 * MiB,
        "cum_bytes": 181 * MiB,
        "flat_share": 0.94,
        "cum_share": 0.94,
    },
)
LOCATION = "s3://dumps/{ns}/{pod}/2026-01-01T00-00-00.000Z-leaky-7-6060.pb.gz"


@dataclass(frozen=True)
class Setup:
    cluster: Cluster
    api: client.ApiClient
    core: client.CoreV1Api
    objects: Objects
    identity: Identity
    webhook: NoticeWebhook
    namespace: str  # opted in
    kubeconfig: Path  # the webhook's ServiceAccount token


def _wait_until_injecting(core: client.CoreV1Api, namespace: str) -> None:
    deadline = time.monotonic() + LIVE_TIMEOUT
    while True:
        pod = core.create_namespaced_pod(namespace, plain_pod("probe"), dry_run="All")
        if any(c.name == "oomdump-sidecar" for c in pod.spec.containers):
            return
        assert time.monotonic() < deadline, "the API server never called the webhook"
        time.sleep(0.2)  # poll interval of a bounded wait


@pytest.fixture(scope="module")
def setup(own_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    objects = render(DEPLOY_DIR)
    api = own_cluster.api_client()
    apply(api, objects)
    identity = service_account_of(objects)
    for grant in rule_grants(one(objects, "ClusterRole", NOTICE_ROLE), None):
        wait_for_authorization(api, identity, grant, allowed=True)
    folder = tmp_path_factory.mktemp("notices")
    kubeconfig = write_token_kubeconfig(own_cluster, identity, folder / "kubeconfig")
    certs = generate_certs(folder / "certs")
    with notice_webhook(certs, kubeconfig, IMAGE, folder / "webhook.log", *RATE) as webhook:
        admission = client.AdmissionregistrationV1Api(api)
        configuration = pointed_at(
            rendered_webhook_configuration(objects),
            webhook.mutate_url,
            certs.ca.read_bytes(),
            WEBHOOK_TIMEOUT_SECONDS,
        )
        name = configuration["metadata"]["name"]
        current = admission.read_mutating_webhook_configuration(name)
        configuration["metadata"]["resourceVersion"] = current.metadata.resource_version
        admission.replace_mutating_webhook_configuration(name, configuration)
        namespace = f"app-{uuid.uuid4().hex[:6]}"
        own_cluster.create_namespace(namespace, INJECT_LABEL)
        core = client.CoreV1Api(api)
        _wait_until_injecting(core, namespace)
        yield Setup(own_cluster, api, core, objects, identity, webhook, namespace, kubeconfig)


@pytest.fixture(scope="module")
def other_replica(
    setup: Setup, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NoticeWebhook]:
    """A second webhook process: the other replica, with a memory of its own."""
    log_path = tmp_path_factory.mktemp("replica") / "webhook.log"
    with notice_webhook(setup.webhook.certs, setup.kubeconfig, IMAGE, log_path, *RATE) as other:
        yield other


@dataclass(frozen=True)
class Watched:
    """An injected, stored pod and what its watcher holds."""

    pod: client.V1Pod
    token_file: Path
    ca_pem: str

    @property
    def token(self) -> str:
        return self.token_file.read_text()


def watched_pod(setup: Setup, folder: Path, container_id: bool = True) -> Watched:
    core = setup.core
    pod = core.create_namespaced_pod(setup.namespace, plain_pod(f"app-{uuid.uuid4().hex[:6]}"))
    watcher = sidecar(pod)
    env = env_of(watcher)
    volumes = {v.name: v for v in pod.spec.volumes}
    (mount,) = [m for m in watcher.volume_mounts if m.mount_path == "/var/run/secrets/oomdump"]
    (source,) = volumes[mount.name].projected.sources
    projected = source.service_account_token
    assert env["NOTIFY_TOKEN_FILE"] == f"{mount.mount_path}/{projected.path}"
    assert env["NOTIFY_URL"] == "https://oomdump-webhook.oomdump-system.svc:443/notice"
    assert projected.expiration_seconds == 600
    if container_id:
        give_container_id(core, pod, "app")
    # What the kubelet would write into the projected volume: the pod's bound token.
    token = token_for(core, setup.namespace, "default", [projected.audience], pod)
    token_file = folder / f"{pod.metadata.name}.token"
    token_file.write_text(token)
    return Watched(pod, token_file, env["NOTIFY_CA"] or "")


def body(pod: client.V1Pod, **changes: Any) -> bytes:
    """A notice as the watcher's client writes it (sidecar.notify.Notice.body)."""
    notice = _notice(pod, **changes)
    return notice.body(pod.metadata.name, pod.metadata.namespace)


def _notice(pod: client.V1Pod, **changes: Any) -> Notice:
    fields = {
        "reason": CAPTURED,
        "pid": 7,
        "comm": "leaky",
        "cgroup": app_cgroup(),
        "usage": 236 * MiB,
        "limit": 256 * MiB,
        "percent": 92.2,
        "location": LOCATION.format(ns=pod.metadata.namespace, pod=pod.metadata.name),
        "detail": "",
        "top": TOP,
    }
    fields.update({k: v for k, v in changes.items() if k in fields})
    return Notice(**fields)


def _without_id(sent: bytes) -> bytes:
    """A notice as a watcher older than notice ids writes it."""
    document = json.loads(sent)
    del document["id"]
    return json.dumps(document).encode()


def _at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Each call on a thread of its own, all released together."""
    start = threading.Barrier(len(calls))

    def released(call: Callable[[], Any]) -> Any:
        start.wait(timeout=10)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(released, calls))


def send_with_the_real_client(
    setup: Setup, watched: Watched, *notices: Notice, url: str | None = None, timeout: float = 2.0
) -> list[str]:
    """Each notice through sidecar.notify.Notifier, waiting for its outcome in turn."""
    outcomes: queue.Queue[str] = queue.Queue()
    notifier = Notifier(
        url or setup.webhook.notice_url,
        watched.token_file,
        watched.ca_pem,
        watched.pod.metadata.name,
        watched.pod.metadata.namespace,
        timeout=timeout,
        on_result=outcomes.put,
    )
    results = []
    try:
        for notice in notices:
            notifier.send(notice)
            results.append(outcomes.get(timeout=SENT_TIMEOUT))
    finally:
        notifier.stop(5.0)
    return results


def test_a_capture_becomes_an_event_on_its_pod_and_repeats_aggregate(
    setup: Setup, tmp_path: Path
) -> None:
    watched = watched_pod(setup, tmp_path)
    pod = watched.pod
    # The CA the watcher got at injection is what signs the webhook's serving chain.
    assert watched.ca_pem == setup.webhook.certs.ca.read_text()

    assert send_with_the_real_client(setup, watched, _notice(pod)) == ["sent"]

    (event,) = wait_for_events(setup.core, pod, lambda found: len(found) == 1, "the Event")
    assert (event.type, event.reason, event.count) == ("Normal", CAPTURED, 1)
    assert event.involved_object.kind == "Pod" and event.involved_object.uid == pod.metadata.uid
    assert event.source.component == "oomdump-webhook"
    location = LOCATION.format(ns=pod.metadata.namespace, pod=pod.metadata.name)
    assert event.message == (
        f"Heap profile of container app, process leaky (pid 7) at 92% of 256Mi saved to "
        f"{location}; top: main.retainInvoiceBatch 181Mi (94%)"
    )
    first_seen = event.first_timestamp

    again = _notice(pod, pid=9, percent=97.4, usage=249 * MiB)
    assert send_with_the_real_client(setup, watched, again) == ["sent"]

    (event,) = wait_for_events(
        setup.core, pod, lambda found: len(found) == 1 and found[0].count == 2, "count 2"
    )
    assert event.first_timestamp == first_seen and event.last_timestamp >= first_seen
    assert "process leaky (pid 9) at 97% of 256Mi" in event.message  # the latest notice

    failed = _notice(
        pod, reason=FAILED, location="/tmp/oomdump/x.pb.gz", detail="upload-failed: HTTP 503"
    )
    assert send_with_the_real_client(setup, watched, failed) == ["sent"]
    found = wait_for_events(setup.core, pod, lambda found: len(found) == 2, "the failure")
    (warning,) = [e for e in found if e.reason == FAILED]
    assert warning.type == "Warning" and warning.count == 1
    assert "failed: upload-failed: HTTP 503; dump at /tmp/oomdump/x.pb.gz" in warning.message


def test_without_a_known_container_the_process_is_named(setup: Setup, tmp_path: Path) -> None:
    watched = watched_pod(setup, tmp_path, container_id=False)
    status, answer = setup.webhook.post(body(watched.pod, top=()), watched.token)
    assert status == 200, answer
    (event,) = events_on(setup.core, watched.pod)
    assert event.message.startswith("Heap profile of process leaky (pid 7) at 92% of 256Mi")


def test_a_pod_cannot_cause_an_event_about_another_pod(setup: Setup, tmp_path: Path) -> None:
    a, b = watched_pod(setup, tmp_path), watched_pod(setup, tmp_path)
    status, answer = setup.webhook.post(body(b.pod), a.token)
    assert status == 403, answer
    assert answer["message"] == (
        f"the token belongs to pod {setup.namespace}/{a.pod.metadata.name}, not to "
        f"{setup.namespace}/{b.pod.metadata.name}: a watcher may only report about its own pod"
    )
    assert events_on(setup.core, b.pod) == [] and events_on(setup.core, a.pod) == []


def test_tokens_that_are_not_the_pods_own_are_refused(setup: Setup, tmp_path: Path) -> None:
    watched = watched_pod(setup, tmp_path)
    pod, core, post = watched.pod, setup.core, setup.webhook.post
    notice = body(pod)
    api_audience = token_for(core, setup.namespace, "default", [], pod)  # the API server's
    status, answer = post(notice, api_audience)
    assert status == 401 and "not valid for the audience oomdump" in answer["message"]
    unbound = token_for(core, setup.namespace, "default", ["oomdump"])
    status, answer = post(notice, unbound)
    assert status == 403 and "not bound to a pod" in answer["message"]
    for garbage in ("x", watched.token[:-4] + "AAAA", "a" * 20_000):
        status, answer = post(notice, garbage)
        assert status == 401, answer
        assert answer["_headers"]["www-authenticate"] == 'Bearer realm="oomdump"'
    status, answer = post(notice, None)
    assert status == 401 and "Authorization: Bearer" in answer["message"]
    assert events_on(core, pod) == []
    # The watcher's token is useless against the API server itself.
    as_watcher = client.ApiClient(_token_configuration(setup.cluster, watched.token))
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(as_watcher).list_namespaced_pod(setup.namespace)
    assert refused.value.status == 401


@pytest.mark.parametrize(
    ("document", "says"),
    [
        (b"{", "the body is not JSON"),
        (b"[]", "must be a JSON object"),
        (None, "reason must be one of"),
        ({"pid": "1; rm -rf /"}, "pid must be an integer"),
        ({"comm": "x" * 65}, "comm is longer than 64"),
        ({"top": [{"name": "main.x", "flat_bytes": -1, "flat_share": 0.5}]}, "flat_bytes"),
        ({"id": "not-hex"}, "id must be 32 lowercase hex digits"),
        (b"x" * 17_000, "exceeds the 16 KiB limit"),
    ],
)
def test_hostile_bodies_get_a_4xx_saying_why(
    setup: Setup, tmp_path: Path, document: Any, says: str
) -> None:
    watched = watched_pod(setup, tmp_path, container_id=False)
    if isinstance(document, bytes):
        sent = document
    else:
        base = json.loads(body(watched.pod))
        sent = json.dumps({**base, **(document or {"reason": "Killing"})}).encode()
    status, answer = setup.webhook.post(sent, watched.token)
    assert 400 <= status < 500 and says in answer["message"], (status, answer)
    assert events_on(setup.core, watched.pod) == []


def test_a_flooding_watcher_is_rate_limited(setup: Setup, tmp_path: Path) -> None:
    watched = watched_pod(setup, tmp_path)
    statuses = [setup.webhook.post(body(watched.pod), watched.token)[0] for _ in range(BURST)]
    assert statuses == [200] * BURST
    status, answer = setup.webhook.post(body(watched.pod), watched.token)
    assert status == 429 and int(answer["_headers"]["retry-after"]) >= 1
    (event,) = events_on(setup.core, watched.pod)
    assert event.count == BURST
    other = watched_pod(setup, tmp_path)  # another pod keeps its own allowance
    assert setup.webhook.post(body(other.pod), other.token)[0] == 200
    metrics = setup.webhook.metrics()
    assert 'oomdump_webhook_notices_total{outcome="rate-limited"}' in metrics
    assert 'oomdump_webhook_notices_total{outcome="aggregated"}' in metrics


@dataclass(frozen=True)
class Needed:
    resource: str
    verb: str
    rule: str  # as the webhook's refusal names it
    aggregate: bool = False  # needed only from the second notice on


NEEDED = [
    Needed("tokenreviews", "create", "tokenreviews create"),
    Needed("pods", "get", "pods get"),
    Needed("events", "create", "events create"),
    Needed("events", "patch", "events patch", aggregate=True),
]


def test_every_verb_of_the_notice_role_has_a_case_that_needs_it(setup: Setup) -> None:
    role = one(setup.objects, "ClusterRole", NOTICE_ROLE)
    granted = {(g["resource"], g["verb"]) for g in rule_grants(role, None)}
    assert granted == {(n.resource, n.verb) for n in NEEDED}


@pytest.mark.parametrize("needed", NEEDED, ids=lambda n: f"{n.resource}-{n.verb}")
def test_notices_fail_clearly_without_each_granted_verb(
    setup: Setup, tmp_path: Path, needed: Needed
) -> None:
    watched = watched_pod(setup, tmp_path)
    notice = body(watched.pod)
    if needed.aggregate:
        assert setup.webhook.post(body(watched.pod), watched.token)[0] == 200
    role = one(setup.objects, "ClusterRole", NOTICE_ROLE)
    with verb_removed(setup.api, setup.identity, role, needed.resource, needed.verb):
        status, answer = setup.webhook.post(notice, watched.token)
    assert status == 503, answer  # the watcher retries a 5xx
    assert f"the webhook's ServiceAccount lacks {needed.rule}" in answer["message"]
    assert setup.identity.username in answer["message"]  # the API server's own refusal
    # The same notice (its id too) with the rule back: the verb was all that was missing,
    # and a notice that failed is no duplicate.
    status, answer = setup.webhook.post(notice, watched.token)
    assert status == 200 and answer["duplicate"] is False, answer
    (event,) = events_on(setup.core, watched.pod)
    assert event.count == (2 if needed.aggregate else 1)


def _token_configuration(cluster: Cluster, token: str) -> client.Configuration:
    configuration = client.Configuration()
    configuration.host = cluster.server_url
    configuration.ssl_ca_cert = str(cluster.ca_path)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return configuration


def test_the_apps_service_account_gained_no_right_to_events(setup: Setup) -> None:
    app = Identity(setup.namespace, "default")
    for verb in ("create", "patch", "update"):
        attributes = {"namespace": setup.namespace, "resource": "events", "verb": verb}
        for group in ("", "events.k8s.io"):
            wait_for_authorization(setup.api, app, {**attributes, "group": group}, allowed=False)
    # And a real attempt with the app's own API token.
    token = token_for(setup.core, setup.namespace, "default", [])
    as_app = client.CoreV1Api(client.ApiClient(_token_configuration(setup.cluster, token)))
    event = {
        "metadata": {"name": f"forged-{uuid.uuid4().hex[:6]}"},
        "involvedObject": {"kind": "Pod", "name": "x", "namespace": setup.namespace},
        "reason": CAPTURED,
        "message": "forged",
    }
    with pytest.raises(ApiException) as refused:
        as_app.create_namespaced_event(setup.namespace, event)
    assert refused.value.status == 403
    assert f"system:serviceaccount:{setup.namespace}:default" in refused.value.body


def _ids_on(event: client.CoreV1Event) -> list[str]:
    return (event.metadata.annotations or {})[NOTICE_IDS].split(",")


def test_a_repeated_notice_counts_once_and_is_answered_duplicate(
    setup: Setup, tmp_path: Path
) -> None:
    watched = watched_pod(setup, tmp_path)
    sent = body(watched.pod)
    first_id = json.loads(sent)["id"]
    status, first = setup.webhook.post(sent, watched.token)
    assert status == 200 and (first["result"], first["count"], first["duplicate"]) == (
        "created", 1, False,
    ), first  # fmt: skip
    status, again = setup.webhook.post(sent, watched.token)
    assert status == 200, again
    assert (again["result"], again["event"], again["count"], again["duplicate"]) == (
        "duplicate", first["event"], 1, True,
    )  # fmt: skip
    (event,) = events_on(setup.core, watched.pod)
    assert event.count == 1 and _ids_on(event) == [first_id]

    other = body(watched.pod)  # another capture: an id of its own
    status, answer = setup.webhook.post(other, watched.token)
    assert status == 200 and (answer["result"], answer["count"], answer["duplicate"]) == (
        "aggregated", 2, False,
    ), answer  # fmt: skip
    (event,) = events_on(setup.core, watched.pod)
    assert event.count == 2 and _ids_on(event) == [first_id, json.loads(other)["id"]]
    assert 'oomdump_webhook_notices_total{outcome="duplicate"}' in setup.webhook.metrics()


def test_repeats_arriving_together_count_once(setup: Setup, tmp_path: Path) -> None:
    """The first holds a claim on the id while it writes; the others wait for it and are
    answered from this replica's memory, before the rate limit: they use none of the
    pod's allowance, which the BURST - 1 notices after them show."""
    watched = watched_pod(setup, tmp_path)
    sent = body(watched.pod)
    answers = _at_once([lambda: setup.webhook.post(sent, watched.token)] * BURST)
    assert [status for status, _ in answers] == [200] * BURST, answers
    assert sorted(answer["duplicate"] for _, answer in answers) == [False] + [True] * (BURST - 1)
    (event,) = events_on(setup.core, watched.pod)
    assert event.count == 1
    later = [setup.webhook.post(body(watched.pod), watched.token) for _ in range(BURST - 1)]
    assert [(status, answer["count"]) for status, answer in later] == [
        (200, count) for count in range(2, BURST + 1)
    ], later
    assert setup.webhook.post(sent, watched.token)[1]["duplicate"] is True  # still, at 0 left


def test_a_malformed_id_is_refused_naming_the_field(setup: Setup, tmp_path: Path) -> None:
    watched = watched_pod(setup, tmp_path)
    document = json.loads(body(watched.pod))
    expected = "id must be 32 lowercase hex digits (128 random bits), not "
    for bad, shown in [
        ("x", "'x'"),
        ("", "''"),
        ("AB" * 16, f"'{'AB' * 16}'"),
        ("0" * 31, f"'{'0' * 31}'"),
        ("0" * 33, f"'{'0' * 33}'"),
        ("\x1b[2J" + "0" * 28, f"'\\\\x1b[2J{'0' * 28}'"),
        (128, "int"),
        (["0" * 32], "list"),
    ]:
        sent = json.dumps({**document, "id": bad}).encode()
        status, answer = setup.webhook.post(sent, watched.token)
        assert (status, answer["error"]) == (400, "bad-request"), (bad, answer)
        assert answer["message"] == expected + shown
    assert events_on(setup.core, watched.pod) == []


def test_notices_without_an_id_count_every_time(
    setup: Setup, other_replica: NoticeWebhook, tmp_path: Path
) -> None:
    """A watcher older than notice ids: each post counts, as before ids (its retries may
    count twice). Its Event has no annotations; the first notice with an id adds them."""
    watched = watched_pod(setup, tmp_path)
    old = _without_id(body(watched.pod))
    answers = [setup.webhook.post(old, watched.token) for _ in range(2)]
    assert [(status, a["count"], a["duplicate"]) for status, a in answers] == [
        (200, 1, False), (200, 2, False),
    ]  # fmt: skip
    (event,) = events_on(setup.core, watched.pod)
    assert event.count == 2 and not event.metadata.annotations
    sent = body(watched.pod)
    assert setup.webhook.post(sent, watched.token)[1]["count"] == 3
    status, answer = other_replica.post(sent, watched.token)
    assert status == 200 and (answer["duplicate"], answer["count"]) == (True, 3), answer
    (event,) = events_on(setup.core, watched.pod)
    assert event.count == 3 and _ids_on(event) == [json.loads(sent)["id"]]


def test_a_repeat_served_by_the_other_replica_counts_once(
    setup: Setup, other_replica: NoticeWebhook, tmp_path: Path
) -> None:
    """The other replica never saw the notice: only the ids on the Event tell it."""
    watched = watched_pod(setup, tmp_path)
    first, second = body(watched.pod), body(watched.pod)
    status, answer = setup.webhook.post(first, watched.token)
    assert status == 200 and answer["result"] == "created", answer
    status, answer = other_replica.post(first, watched.token)
    assert status == 200 and (answer["result"], answer["count"]) == ("duplicate", 1), answer
    assert setup.webhook.post(second, watched.token)[1]["count"] == 2
    # An attempt the other replica serves late, after a newer notice was counted.
    for late in (first, second):
        status, answer = other_replica.post(late, watched.token)
        assert status == 200 and answer["duplicate"] is True, answer
    (event,) = events_on(setup.core, watched.pod)
    assert event.count == 2
    assert "notice duplicate: event" in other_replica.log_text()


def test_repeats_on_both_replicas_at_once_count_once(
    setup: Setup, other_replica: NoticeWebhook, tmp_path: Path
) -> None:
    """Racing on the create (the first notice) and on the count's patch (the second)."""
    watched = watched_pod(setup, tmp_path)
    for expected in (1, 2):
        sent = body(watched.pod)
        replicas = (setup.webhook, other_replica)
        posts = [lambda to=to, sent=sent: to.post(sent, watched.token) for to in replicas]
        answers = _at_once(posts * 3)
        assert [status for status, _ in answers] == [200] * 6, answers
        assert sorted(answer["duplicate"] for _, answer in answers) == [False] + [True] * 5
        (event,) = events_on(setup.core, watched.pod)
        assert event.count == expected


@pytest.mark.parametrize("hold", [False, True], ids=["reset", "timeout"])
def test_the_watcher_retrying_after_a_lost_answer_counts_once(
    setup: Setup, tmp_path: Path, hold: bool
) -> None:
    """The real Notifier through a relay that lets the webhook write the Event and then
    keeps its answer from the watcher: the connection closed without a response, or no
    answer until the watcher's deadline. The retry carries the same id."""
    watched = watched_pod(setup, tmp_path)
    notice = _notice(watched.pod)
    lines = io.StringIO()
    log.set_stream(lines)
    try:
        with answer_losing_relay(setup.webhook, lose=1, hold=hold) as relay:
            outcomes = send_with_the_real_client(setup, watched, notice, url=relay.url, timeout=1.0)
    finally:
        log.set_stream(sys.stderr)
    assert outcomes == ["sent"], lines.getvalue()
    lost, retry = relay.relayed
    assert lost.notice["id"] == retry.notice["id"] == notice.id
    assert lost.lost and (lost.status, lost.answer["result"]) == (200, "created")
    assert not retry.lost and retry.status == 200 and retry.answer["duplicate"] is True
    (event,) = events_on(setup.core, watched.pod)
    assert event.count == 1
    (sent_line,) = [line for line in lines.getvalue().splitlines() if "notice-sent" in line]
    assert f"id={notice.id} duplicate=true" in sent_line
