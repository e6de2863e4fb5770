"""The thin edge of `bootstrap`: read and write the Secret and the webhook configuration
through the Kubernetes API. Decisions live in `certs.plan`."""

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from certs.plan import SecretState, WebhookConfigState

SECRET_TYPE = "kubernetes.io/tls"
MANAGED_BY = {"app.kubernetes.io/managed-by": "oomdump-certs"}
# Seconds per API request: the loop must never hang on a dead connection.
REQUEST_TIMEOUT = 15

T = TypeVar("T")


class Conflict(Exception):
    """Someone else changed or created the object first: observe again and re-plan."""


class NotFound(Exception):
    """The object does not exist."""


class ClusterError(RuntimeError):
    """The API server refused a request or could not be reached; the message says why."""


def _request(what: str, call: Callable[[], T], conflict: tuple[int, ...] = ()) -> T:
    """`call()`, with API failures turned into Conflict, NotFound or a ClusterError that
    names `what` was attempted."""
    try:
        return call()
    except ApiException as error:
        if error.status in conflict:
            raise Conflict(f"{what}: HTTP {error.status}, another writer got there first") from None
        if error.status == 404:
            raise NotFound(what) from None
        hint = ""
        if error.status == 403:
            hint = " (the service account lacks this permission; see deploy/base/rbac.yaml)"
        raise ClusterError(
            f"{what}: HTTP {error.status} {error.reason}{hint}: {error.body}"
        ) from None
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise ClusterError(f"{what}: cannot reach the API server: {error}") from None


def api_client(kubeconfig: str | None) -> client.ApiClient:
    """A client from `kubeconfig`, else the pod's service account, else $KUBECONFIG."""
    configuration = client.Configuration()
    try:
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                config.load_kube_config(client_configuration=configuration)
    except (config.ConfigException, OSError) as error:
        where = kubeconfig or "the pod's service account or $KUBECONFIG"
        raise ClusterError(f"no usable Kubernetes credentials from {where}: {error}") from None
    return client.ApiClient(configuration)


@dataclass
class KubeCluster:
    """The Secret `secret_name` in `namespace` and the MutatingWebhookConfiguration
    `webhook_config_name`, as seen through `api`."""

    api: client.ApiClient
    namespace: str
    secret_name: str
    webhook_config_name: str

    @property
    def _secret_ref(self) -> str:
        return f"Secret {self.namespace}/{self.secret_name}"

    @property
    def _config_ref(self) -> str:
        return f"MutatingWebhookConfiguration {self.webhook_config_name}"

    def read_secret(self) -> SecretState | None:
        core = client.CoreV1Api(self.api)
        try:
            secret = _request(
                f"reading {self._secret_ref}",
                lambda: core.read_namespaced_secret(
                    self.secret_name, self.namespace, _request_timeout=REQUEST_TIMEOUT
                ),
            )
        except NotFound:
            return None
        data = {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}
        return SecretState(data, secret.metadata.resource_version)

    def _body(self, data: dict[str, bytes], resource_version: str | None) -> client.V1Secret:
        return client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=self.secret_name,
                namespace=self.namespace,
                labels=MANAGED_BY,
                resource_version=resource_version,
            ),
            type=SECRET_TYPE,
            data={key: base64.b64encode(value).decode() for key, value in data.items()},
        )

    def create_secret(self, data: dict[str, bytes]) -> None:
        core = client.CoreV1Api(self.api)
        _request(
            f"creating {self._secret_ref}",
            lambda: core.create_namespaced_secret(
                self.namespace, self._body(data, None), _request_timeout=REQUEST_TIMEOUT
            ),
            conflict=(409,),
        )

    def update_secret(self, data: dict[str, bytes], resource_version: str) -> None:
        core = client.CoreV1Api(self.api)
        try:
            _request(
                f"updating {self._secret_ref}",
                lambda: core.replace_namespaced_secret(
                    self.secret_name,
                    self.namespace,
                    self._body(data, resource_version),
                    _request_timeout=REQUEST_TIMEOUT,
                ),
                conflict=(409,),
            )
        except NotFound:
            raise Conflict(f"{self._secret_ref} was deleted meanwhile") from None

    def read_webhook_config(self) -> WebhookConfigState | None:
        admission = client.AdmissionregistrationV1Api(self.api)
        try:
            found = _request(
                f"reading {self._config_ref}",
                lambda: admission.read_mutating_webhook_configuration(
                    self.webhook_config_name, _request_timeout=REQUEST_TIMEOUT
                ),
            )
        except NotFound:
            return None
        bundles = {
            webhook.name: base64.b64decode(webhook.client_config.ca_bundle or "")
            for webhook in found.webhooks or []
        }
        return WebhookConfigState(bundles, found.metadata.resource_version)

    def set_ca_bundle(
        self, bundle: bytes, webhooks: tuple[str, ...], resource_version: str
    ) -> None:
        """A strategic merge on `webhooks` (merge key `name`) touches only caBundle; the
        resourceVersion makes it fail with 409 if the object changed since it was read."""
        encoded = base64.b64encode(bundle).decode()
        patch = {
            "metadata": {"resourceVersion": resource_version},
            "webhooks": [
                {"name": name, "clientConfig": {"caBundle": encoded}} for name in webhooks
            ],
        }
        admission = client.AdmissionregistrationV1Api(self.api)
        try:
            _request(
                f"patching caBundle of {self._config_ref}",
                lambda: admission.patch_mutating_webhook_configuration(
                    self.webhook_config_name,
                    patch,
                    _content_type="application/strategic-merge-patch+json",
                    _request_timeout=REQUEST_TIMEOUT,
                ),
                conflict=(409,),
            )
        except NotFound:
            raise Conflict(f"{self._config_ref} was deleted meanwhile") from None
