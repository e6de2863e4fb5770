"""A real TLS server on loopback serving a certificate pair, and a verifying client."""

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

GREETING = b"ok"


@contextlib.contextmanager
def tls_server(cert_file: Path, key_file: Path) -> Iterator[int]:
    """Serve `cert_file`/`key_file` on 127.0.0.1 until the block ends; yields the port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(5)
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    conn.sendall(GREETING)
            except (ssl.SSLError, OSError):
                raw.close()  # the client refused us: that is what some tests expect

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def handshake(port: int, ca_file: Path, server_name: str) -> bytes:
    """Connect verifying the chain against `ca_file` and the name `server_name`."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as conn,
    ):
        return conn.recv(len(GREETING))
