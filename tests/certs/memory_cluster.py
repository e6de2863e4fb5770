"""An in-memory stand-in for the API server's optimistic concurrency (409 on a create that
lost a race or an update with a stale resourceVersion).

A test double: it lets the unit tests replay exact interleavings of two replicas, which a
real server cannot be made to produce on demand. The same `bootstrap` runs against a real
kube-apiserver + etcd in the end-to-end suite (tests/e2e, issue 5).
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from certs.kube import Conflict
from certs.plan import SecretState, WebhookConfigState


@dataclass
class MemoryCluster:
    secret: SecretState | None = None
    webhook_config: WebhookConfigState | None = None
    calls: list[str] = field(default_factory=list)
    # Runs just before a create/update is decided, to let "another replica" act first.
    before_write: Callable[[], None] | None = None
    _version: int = 100

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _interleave(self) -> None:
        hook, self.before_write = self.before_write, None
        if hook is not None:
            hook()

    def read_secret(self) -> SecretState | None:
        return self.secret

    def create_secret(self, data: dict[str, bytes]) -> None:
        self._interleave()
        self.calls.append("create_secret")
        if self.secret is not None:
            raise Conflict("secrets already exists")
        self.secret = SecretState(dict(data), self._next_version())

    def update_secret(self, data: dict[str, bytes], resource_version: str) -> None:
        self._interleave()
        self.calls.append("update_secret")
        if self.secret is None or self.secret.resource_version != resource_version:
            raise Conflict("the object has been modified")
        self.secret = SecretState(dict(data), self._next_version())

    def read_webhook_config(self) -> WebhookConfigState | None:
        return self.webhook_config

    def set_ca_bundle(
        self, bundle: bytes, webhooks: tuple[str, ...], resource_version: str
    ) -> None:
        self.calls.append("set_ca_bundle")
        current = self.webhook_config
        if current is None or current.resource_version != resource_version:
            raise Conflict("the object has been modified")
        bundles = dict(current.ca_bundles)
        bundles.update(dict.fromkeys(webhooks, bundle))
        self.webhook_config = WebhookConfigState(bundles, self._next_version())
