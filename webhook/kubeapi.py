"""The webhook's few API calls for notices: TokenReview, read one Pod, write one Event.

Blocking (the Kubernetes client); the HTTP layer runs them on worker threads. Every call
has a timeout. A refusal by the API server (RBAC) or an unreachable one becomes
ApiUnavailable, whose message names what was attempted and which rule allows it.
"""

import json
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from webhook.reviewed import IN_CLUSTER_TOKEN, ApiUnavailable, Reviewed

REQUEST_TIMEOUT = (2.0, 3.0)  # connect, read (seconds) for each API request
ATTEMPTS = 3  # writes of one Event that lost a race with another replica
CACHE_SIZE = 4096
COMPONENT = "oomdump-webhook"


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
        self._counts: OrderedDict[tuple[str, str], tuple[str, int]] = OrderedDict()

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

    def record(self, event: dict[str, Any]) -> tuple[str, int]:
        """Create `event` (count 1), or add 1 to the count of the Event of the same name
        about the same pod (a JSON patch that tests the count first, so two replicas never
        lose an increment). Returns ("created" | "aggregated", count)."""
        namespace = event["metadata"]["namespace"]
        key = (namespace, event["metadata"]["name"])
        for _ in range(ATTEMPTS):
            with self._lock:
                known = self._counts.get(key)
            if known is None:
                result = self._create(event, key)
            else:
                result = self._increment(event, key, *known)
            if result is not None:
                return result
        raise ApiUnavailable(f"event {namespace}/{key[1]} changed under every attempt")

    def _remember(self, key: tuple[str, str], name: str, count: int) -> None:
        with self._lock:
            self._counts[key] = (name, count)
            self._counts.move_to_end(key)
            while len(self._counts) > CACHE_SIZE:
                self._counts.popitem(last=False)

    def _forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._counts.pop(key, None)

    def _create(self, event: dict[str, Any], key: tuple[str, str]) -> tuple[str, int] | None:
        namespace, name = key
        now = _now()
        body = {
            **event,
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
            self._remember(key, name, current)
            return None
        self._remember(key, name, int(created.get("count") or 1))
        return "created", 1

    def _create_unique(self, body: dict[str, Any], key: tuple[str, str]) -> tuple[str, int]:
        namespace, name = key
        metadata = {"generateName": f"{name[:240]}-", "namespace": namespace}
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
        self._remember(key, str(created["metadata"]["name"]), 1)
        return "created", 1

    def _patch(self, namespace: str, name: str, patch: list[dict[str, Any]]) -> dict[str, Any]:
        return _call(
            f"patching event {namespace}/{name}", "events patch",
            lambda: self._core.patch_namespaced_event(
                name, namespace, patch, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            ),
        )  # fmt: skip

    def _read(self, event: dict[str, Any], name: str) -> int | None:
        """The count of Event `name` when it is about our pod, else None. A patch whose only
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
        return int(current.get("count") or 1)

    def _increment(
        self, event: dict[str, Any], key: tuple[str, str], name: str, count: int
    ) -> tuple[str, int] | None:
        namespace = key[0]
        patch = [
            {"op": "test", "path": "/involvedObject/uid", "value": event["involvedObject"]["uid"]},
            {"op": "test", "path": "/count", "value": count},
            {"op": "replace", "path": "/count", "value": count + 1},
            {"op": "replace", "path": "/lastTimestamp", "value": _now()},
            {"op": "replace", "path": "/message", "value": event["message"]},
        ]
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
                    self._remember(key, name, current)
                return None
            raise ApiUnavailable(f"patching event {namespace}/{name}: {_reason(error)}") from None
        total = int(patched.get("count") or count + 1)
        self._remember(key, name, total)
        return "aggregated", total
