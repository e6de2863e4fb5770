"""The webhook's few API calls for notices: TokenReview, read one Pod, write one Event.

Blocking (the Kubernetes client); the HTTP layer runs them on worker threads. Every call
has a timeout. A refusal by the API server (RBAC) or an unreachable one becomes
ApiUnavailable, whose message names what was attempted and which rule allows it.

Each Event carries the ids of the last notices counted in it (annotation NOTICE_IDS),
written in the same patch that raises the count. Every write tests the count first, so
what a replica read of the Event (count and ids together) is still true when its patch
applies: a notice whose id is there was counted, by this replica or another, and is
answered "duplicate" without a write. That makes a watcher's retry exact across replicas
and restarts, where webhook.recent (one replica's memory) cannot see.
"""

import json
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any, NamedTuple

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from webhook.reviewed import IN_CLUSTER_TOKEN, ApiUnavailable, Reviewed

REQUEST_TIMEOUT = (2.0, 3.0)  # connect, read (seconds) for each API request
ATTEMPTS = 3  # writes of one Event that lost a race with another replica
CACHE_SIZE = 4096
COMPONENT = "oomdump-webhook"
NOTICE_IDS = "oomdump.io/notice-ids"  # on our Events: the last ids counted, comma-separated
# Ids kept on one Event. One watcher sends its notices one after another, retrying each
# before the next, so the retry of the newest is what comes back; a stale attempt still
# being served by the other replica may be a few notices behind (the default burst is 20).
# 32 ids are ~1 KiB of the Event; an id pushed out could be counted twice, nothing worse.
IDS_KEPT = 32
_IDS_PATH = "/metadata/annotations/" + NOTICE_IDS.replace("~", "~0").replace("/", "~1")


class Counted(NamedTuple):
    """What a replica knows of one Event: its real name, count and the ids counted in it
    (None: the Event has no annotations at all, e.g. made by an older webhook)."""

    name: str
    count: int
    ids: tuple[str, ...] | None


def load_client(kubeconfig: str | None) -> client.ApiClient | None:
    """From `kubeconfig`, else the pod's ServiceAccount; None when neither is there (notices
    are then off). Never ~/.kube/config: a webhook must not act as whoever runs it."""
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    elif IN_CLUSTER_TOKEN.exists():
        config.load_incluster_config(client_configuration=configuration)
    else:
        return None
    return client.ApiClient(configuration)


def _body(response: Any) -> dict[str, Any]:
    return json.loads(response.data)


def _call(what: str, rule: str, call: Any) -> dict[str, Any]:
    try:
        return _body(call())
    except ApiException as error:
        if error.status == 403:
            raise ApiUnavailable(
                f"{what}: the webhook's ServiceAccount lacks {rule} (deploy/base/rbac.yaml):"
                f" {_reason(error)}"
            ) from None
        raise
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise ApiUnavailable(f"{what}: cannot reach the API server: {error}") from None


def _reason(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or b"{}").get("message", ""))[:300]
    except (ValueError, AttributeError):
        return str(error.reason)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NoticeApi:
    def __init__(self, api: client.ApiClient, instance: str) -> None:
        self._core = client.CoreV1Api(api)
        self._authn = client.AuthenticationV1Api(api)
        self._instance = instance
        self._lock = threading.Lock()
        self._counts: OrderedDict[tuple[str, str], Counted] = OrderedDict()

    def review(self, token: str, audience: str) -> Reviewed:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]},
        }
        try:
            answer = _call(
                "reviewing the token", "tokenreviews create",
                lambda: self._authn.create_token_review(
                    body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                ),
            )  # fmt: skip
        except ApiException as error:
            raise ApiUnavailable(f"reviewing the token: HTTP {error.status}") from None
        status = answer.get("status") or {}
        user = status.get("user") or {}
        extra = user.get("extra") or {}
        return Reviewed(
            authenticated=status.get("authenticated") is True,
            error=str(status.get("error") or "")[:300],
            username=str(user.get("username") or ""),
            audiences=tuple(str(a) for a in status.get("audiences") or ()),
            extra=tuple((str(k), tuple(str(v) for v in vs)) for k, vs in extra.items()),
        )

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _call(
                f"reading pod {namespace}/{name}", "pods get",
                lambda: self._core.read_namespaced_pod(
                    name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                ),
            )  # fmt: skip
        except ApiException as error:
            if error.status == 404:
                return None
            raise ApiUnavailable(f"reading pod {namespace}/{name}: HTTP {error.status}") from None

    def record(self, event: dict[str, Any], notice_id: str | None) -> tuple[str, int]:
        """Create `event` (count 1), or add 1 to the count of the Event of the same name
        about the same pod (a JSON patch that tests the count first, so two replicas never
        lose an increment). Returns ("created" | "aggregated", count), or ("duplicate",
        count) without a write when `notice_id` was counted in that Event already."""
        namespace = event["metadata"]["namespace"]
        key = (namespace, event["metadata"]["name"])
        for _ in range(ATTEMPTS):
            with self._lock:
                known = self._counts.get(key)
            if known is None:
                result = self._create(event, key, notice_id)
            elif notice_id is not None and notice_id in (known.ids or ()):
                return "duplicate", known.count
            else:
                result = self._increment(event, key, known, notice_id)
            if result is not None:
                return result
        raise ApiUnavailable(f"event {namespace}/{key[1]} changed under every attempt")

    def _remember(self, key: tuple[str, str], counted: Counted) -> None:
        with self._lock:
            self._counts[key] = counted
            self._counts.move_to_end(key)
            while len(self._counts) > CACHE_SIZE:
                self._counts.popitem(last=False)

    def _forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._counts.pop(key, None)

    def _create(
        self, event: dict[str, Any], key: tuple[str, str], notice_id: str | None
    ) -> tuple[str, int] | None:
        namespace, name = key
        now = _now()
        metadata = dict(event["metadata"])
        if notice_id is not None:
            metadata["annotations"] = {NOTICE_IDS: notice_id}
        body = {
            **event,
            "metadata": metadata,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
        }
        try:
            created = _call(
                f"creating event {namespace}/{name}", "events create",
                lambda: self._core.create_namespaced_event(
                    namespace, body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                ),
            )  # fmt: skip
        except ApiException as error:
            if error.status != 409:
                what = f"creating event {namespace}/{name}"
                raise ApiUnavailable(f"{what}: {_reason(error)}") from None
            current = self._read(event, name)  # made by another replica, or before a restart
            if current is None:  # the name is taken by an Event about another object
                return self._create_unique(body, key)
            self._remember(key, current)
            return None  # counted again from what was read (a duplicate, or one more)
        self._remember(key, _counted(name, created))
        return "created", 1

    def _create_unique(self, body: dict[str, Any], key: tuple[str, str]) -> tuple[str, int]:
        namespace, name = key
        metadata = {**body["metadata"], "generateName": f"{name[:240]}-"}
        del metadata["name"]
        unique = {**body, "metadata": metadata}
        try:
            created = _call(
                f"creating event {namespace}/{name}-*", "events create",
                lambda: self._core.create_namespaced_event(
                    namespace, unique, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                ),
            )  # fmt: skip
        except ApiException as error:
            raise ApiUnavailable(f"creating event {namespace}/{name}-*: {_reason(error)}") from None
        self._remember(key, _counted(str(created["metadata"]["name"]), created))
        return "created", 1

    def _patch(self, namespace: str, name: str, patch: list[dict[str, Any]]) -> dict[str, Any]:
        return _call(
            f"patching event {namespace}/{name}", "events patch",
            lambda: self._core.patch_namespaced_event(
                name, namespace, patch, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            ),
        )  # fmt: skip

    def _read(self, event: dict[str, Any], name: str) -> Counted | None:
        """Event `name` as counted when it is about our pod, else None. A patch whose only
        operation is a test changes nothing and answers the object: a read with `patch`
        alone, so the role needs no `get` on events."""
        namespace = event["metadata"]["namespace"]
        uid = event["involvedObject"]["uid"]
        try:
            current = self._patch(
                namespace, name, [{"op": "test", "path": "/involvedObject/uid", "value": uid}]
            )
        except ApiException as error:
            if error.status in (409, 422):
                return None
            raise ApiUnavailable(f"reading event {namespace}/{name}: {_reason(error)}") from None
        return _counted(name, current)

    def _increment(
        self, event: dict[str, Any], key: tuple[str, str], known: Counted, notice_id: str | None
    ) -> tuple[str, int] | None:
        namespace = key[0]
        name, count = known.name, known.count
        patch = [
            {"op": "test", "path": "/involvedObject/uid", "value": event["involvedObject"]["uid"]},
            {"op": "test", "path": "/count", "value": count},
            {"op": "replace", "path": "/count", "value": count + 1},
            {"op": "replace", "path": "/lastTimestamp", "value": _now()},
            {"op": "replace", "path": "/message", "value": event["message"]},
        ]
        if notice_id is not None:
            patch.append(_ids_operation(known.ids, notice_id))
        try:
            patched = self._patch(namespace, name, patch)
        except ApiException as error:
            if error.status == 404:  # expired (the API server keeps Events an hour)
                self._forget(key)
                return None
            if error.status in (409, 422):  # another replica counted first: read again
                current = self._read(event, name)
                if current is None:
                    self._forget(key)
                else:
                    self._remember(key, current)
                return None
            raise ApiUnavailable(f"patching event {namespace}/{name}: {_reason(error)}") from None
        counted = _counted(name, patched)
        self._remember(key, counted)
        return "aggregated", counted.count


def _counted(name: str, event: dict[str, Any]) -> Counted:
    """What `event`, as the API server answered it, says was counted."""
    annotations = (event.get("metadata") or {}).get("annotations")
    ids: tuple[str, ...] | None = None
    if isinstance(annotations, dict):
        text = annotations.get(NOTICE_IDS)
        ids = tuple(text.split(",")) if isinstance(text, str) and text else ()
    return Counted(name, int(event.get("count") or 1), ids)


def _ids_operation(ids: tuple[str, ...] | None, notice_id: str) -> dict[str, Any]:
    """The patch operation that adds `notice_id` to the Event's ids (the oldest beyond
    IDS_KEPT dropped). The count test before it makes `ids` the Event's current ones."""
    if ids is None:  # no annotations at all: the map itself is added
        return {"op": "add", "path": "/metadata/annotations", "value": {NOTICE_IDS: notice_id}}
    kept = ",".join((*ids[-(IDS_KEPT - 1) :], notice_id))
    return {"op": "add", "path": _IDS_PATH, "value": kept}
