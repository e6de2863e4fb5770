"""A pod's spool as a store: the dumps its watcher still holds in DUMP_DIR (no bucket, or
not uploaded yet), read through the Kubernetes API with the operator's own credentials.

Each listing or read is one exec into the pod's `oomdump-sidecar` container, running
`oomdump.cli.spool_agent` there (the watcher's image carries it), as `kubectl exec` would:
the operator needs `pods/exec` in that namespace and nothing else; the watcher itself has
no API credentials. What comes back is bounded (MAX_OBJECT_BYTES, base64) and the exec has
a deadline, so a wedged pod cannot hang the CLI.
"""

import base64
import binascii
import json
import time
from collections.abc import Iterator
from typing import Any

from oomdump.cli.errors import NOT_A_PROFILE, NOT_FOUND, STORE, USAGE, CliError
from oomdump.cli.stores import MAX_LISTED, StoredObject

WATCHER_CONTAINER = "oomdump-sidecar"
AGENT = ["python", "-m", "oomdump.cli.spool_agent"]
EXEC_TIMEOUT = 60.0
# A listing line is a key (at most ~1 KiB) and a size.
LISTING_MAX_BYTES = MAX_LISTED * 1200


def parse_reference(text: str) -> tuple[str, str]:
    """`NAMESPACE/POD` -> (namespace, pod)."""
    namespace, _, pod = text.partition("/")
    if not namespace or not pod or "/" in pod:
        raise CliError(USAGE, f"--in-pod {text!r}: give NAMESPACE/POD")
    return namespace, pod


def _core_api(kubeconfig: str | None, context: str | None) -> Any:
    """A CoreV1Api from the kubeconfig (KUBECONFIG or ~/.kube/config unless given), else
    in-cluster credentials; a client of its own, so no global configuration changes."""
    from kubernetes import client, config

    try:
        try:
            api = config.new_client_from_config(config_file=kubeconfig, context=context)
        except config.ConfigException:
            if kubeconfig is not None or context is not None:
                raise
            in_cluster = client.Configuration()
            config.load_incluster_config(client_configuration=in_cluster)
            api = client.ApiClient(in_cluster)
    except (config.ConfigException, OSError) as error:
        raise CliError(
            STORE, f"no Kubernetes credentials (KUBECONFIG, --kubeconfig, in-cluster): {error}"
        ) from None
    return client.CoreV1Api(api)


class PodSpoolStore:
    """The spool of one pod's watcher, keys as the watcher writes them (with S3_PREFIX)."""

    def __init__(
        self, namespace: str, pod: str, kubeconfig: str | None = None, context: str | None = None
    ) -> None:
        self.namespace = namespace
        self.pod = pod
        self.prefix = ""
        self._kubeconfig = kubeconfig
        self._context = context
        self._api: Any = None

    def describe(self, key: str = "") -> str:
        where = f"pod {self.namespace}/{self.pod} (spool)"
        return f"{where}: {key}" if key else where

    def objects(self, under: str) -> Iterator[StoredObject]:
        output = self._run(["list"], LISTING_MAX_BYTES)
        for line in output.splitlines():
            try:
                item = json.loads(line)
                stored = StoredObject(str(item["key"]), int(item["size"]))
            except (ValueError, KeyError, TypeError):
                raise CliError(STORE, f"{self.describe()}: unreadable listing line") from None
            if stored.key.startswith(under):
                yield stored

    def read(self, key: str, limit: int) -> bytes:
        encoded = self._run(["read", key, str(limit)], (limit + 2) // 3 * 4 + 2)
        try:
            return base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise CliError(STORE, f"{self.describe(key)}: unreadable answer") from None

    def _run(self, arguments: list[str], max_bytes: int) -> str:
        from kubernetes.client.rest import ApiException
        from kubernetes.stream import stream

        if self._api is None:
            self._api = _core_api(self._kubeconfig, self._context)
            self._check_watcher_running()
        try:
            session = stream(
                self._api.connect_get_namespaced_pod_exec,
                self.pod,
                self.namespace,
                container=WATCHER_CONTAINER,
                command=[*AGENT, *arguments],
                stdin=False,
                stdout=True,
                stderr=True,
                tty=False,
                _preload_content=False,
            )
        except ApiException as error:
            raise self._explain(error) from None
        except Exception as error:  # the client's websocket handshake has no typed error
            raise CliError(STORE, f"{self.describe()}: exec failed: {error}") from None
        return self._collect(session, max_bytes)

    def _check_watcher_running(self) -> None:
        """Read the pod first: a missing pod or watcher is named plainly, before an exec
        whose failure the client reports poorly."""
        from kubernetes.client.rest import ApiException

        try:
            pod = self._api.read_namespaced_pod(self.pod, self.namespace)
        except ApiException as error:
            raise self._explain(error) from None
        statuses = [*(pod.status.container_statuses or []),
                    *(pod.status.init_container_statuses or [])]  # fmt: skip
        if not any(s.name == WATCHER_CONTAINER and s.state and s.state.running for s in statuses):
            raise CliError(NOT_FOUND, self._no_watcher())

    def _no_watcher(self) -> str:
        return (
            f"pod {self.namespace}/{self.pod} has no running {WATCHER_CONTAINER} container "
            "(not injected, or the watcher is not running)"
        )

    def _collect(self, session: Any, max_bytes: int) -> str:
        stdout: list[str] = []
        stderr: list[str] = []
        size = 0
        deadline = time.monotonic() + EXEC_TIMEOUT
        try:
            while session.is_open():
                if time.monotonic() > deadline:
                    raise CliError(
                        STORE, f"{self.describe()}: no answer within {EXEC_TIMEOUT:.0f}s"
                    )
                session.update(timeout=1)
                if session.peek_stdout():
                    chunk = session.read_stdout()
                    size += len(chunk)
                    if size > max_bytes:
                        raise CliError(NOT_A_PROFILE, f"{self.describe()}: answer too large")
                    stdout.append(chunk)
                if session.peek_stderr() and sum(map(len, stderr)) < 64 * 1024:
                    stderr.append(session.read_stderr())
            code = session.returncode
        finally:
            session.close()
        if code:
            message = "".join(stderr).strip()[:500] or f"exit code {code}"
            if "No module named" in message:
                message = f"the watcher's image has no spool agent ({message})"
            raise CliError(
                NOT_FOUND if code == NOT_FOUND else STORE, f"{self.describe()}: {message}"
            )
        return "".join(stdout)

    def _explain(self, error: Any) -> CliError:
        status, reason = getattr(error, "status", 0), str(getattr(error, "body", "") or error)
        if status == 404:
            return CliError(NOT_FOUND, f"pod {self.namespace}/{self.pod} not found")
        if status == 403:
            return CliError(
                STORE, f"your credentials may not exec into pods in {self.namespace} (pods/exec)"
            )
        if status == 400 and "container" in reason:
            return CliError(NOT_FOUND, self._no_watcher())
        return CliError(STORE, f"{self.describe()}: {status} {reason[:300]}")
