"""What the notice handler learns from the API server, without importing its client (the
Kubernetes client loads only where API credentials are configured)."""

from dataclasses import dataclass
from pathlib import Path

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class ApiUnavailable(RuntimeError):
    """The API server refused or could not be reached; retrying later may work."""


@dataclass(frozen=True)
class Reviewed:
    authenticated: bool
    error: str
    username: str = ""
    audiences: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def first(self, key: str) -> str | None:
        for name, values in self.extra:
            if name == key and values:
                return values[0]
        return None
