"""The CA bundle the watcher trusts for notices: the `ca.crt` next to the served pair.

`certs bootstrap` and cert-manager both write it beside `tls.crt`, and both rotate it with
the pair, so it is re-read with the certificate. Only whole PEM certificates pass, written
out again, so nothing but certificates reaches the watcher's environment.
"""

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

MAX_BYTES = 64 * 1024


def read(path: Path) -> bytes | str:
    """The file's bytes (at most MAX_BYTES + 1), or why it cannot be read."""
    try:
        with path.open("rb") as handle:
            return handle.read(MAX_BYTES + 1)
    except OSError as error:
        return f"cannot read {path}: {error.strerror}"


def bundle(data: bytes | str, path: Path) -> tuple[str | None, str]:
    """(PEM bundle, "") when `data` holds certificates, else (None, why not)."""
    if isinstance(data, str):
        return None, data
    if len(data) > MAX_BYTES:
        return None, f"{path} is larger than {MAX_BYTES // 1024} KiB"
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as error:
        return None, f"{path} holds no PEM certificate: {error}"
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certificates), ""
