"""Listening-port discovery: /proc/net/tcp parsing and real sockets of this process."""
# ruff: noqa: E501  (the /proc/net/tcp rows below are verbatim kernel lines)

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar import ports

# Real rows (kernel format): 0.0.0.0:8080 LISTEN, 127.0.0.1:6060 LISTEN, an ESTABLISHED one.
TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:17AC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0000000000000000 20 4 30 10 -1
"""
# [::]:8080 LISTEN (same port as the v4 row), [::1]:9090 LISTEN, [::ffff:127.0.0.1]:7070.
TCP6 = """  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:2382 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:1B9E 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6666 1 0000000000000000 100 0 0 10 0
"""


def test_parse_listen_rows_only() -> None:
    listeners = ports.parse_tcp_table(TCP)
    assert [(str(x.address), x.port, x.inode) for x in listeners] == [
        ("0.0.0.0", 8080, 1111),
        ("127.0.0.1", 6060, 2222),
    ]


def test_parse_ipv6_and_mapped() -> None:
    listeners = ports.parse_tcp_table(TCP6)
    assert [(str(x.address), x.port) for x in listeners] == [
        ("::", 8080),
        ("::1", 9090),
        ("127.0.0.1", 7070),
    ]


def test_only_own_inodes_deduplicated_and_addressed() -> None:
    listeners = ports.parse_tcp_table(TCP) + ports.parse_tcp_table(TCP6)
    own = {1111, 4444, 5555, 6666}  # 2222 (6060) belongs to another container of the pod
    assert ports.endpoints(listeners, own) == [
        ports.Endpoint(7070, "127.0.0.1"),
        ports.Endpoint(8080, "127.0.0.1"),  # v4 and v6 wildcard: fetched once, over v4
        ports.Endpoint(9090, "::1"),
    ]


def test_specific_address_is_used_as_is_when_the_pod_owns_it() -> None:
    listener = ports.Listener(ipaddress.IPv4Address("10.1.2.3"), 8080, 1)
    local = frozenset({ipaddress.IPv4Address("10.1.2.3")})
    assert ports.endpoints([listener], {1}, local) == [ports.Endpoint(8080, "10.1.2.3")]
    assert ports.endpoints([listener], {1}) == []  # not the pod's: never connected to


def test_local_addresses_of_this_namespace_are_read_from_the_kernel() -> None:
    local = ports.local_addresses(Path("/proc"), os.getpid())
    assert ipaddress.IPv4Address("127.0.0.1") in local


def test_at_most_max_endpoints_per_process() -> None:
    many = [
        ports.Listener(ipaddress.IPv4Address("0.0.0.0"), 1000 + n, n) for n in range(100)
    ]
    found = ports.endpoints(many, set(range(100)))
    assert [e.port for e in found] == list(range(1000, 1000 + ports.MAX_ENDPOINTS))


def test_pprof_ports_override() -> None:
    assert ports.fixed((6060, 8080)) == [
        ports.Endpoint(6060, "127.0.0.1"),
        ports.Endpoint(8080, "127.0.0.1"),
    ]


@pytest.fixture
def listening_sockets() -> Iterator[dict[str, int]]:
    opened: list[socket.socket] = []

    def listen(family: socket.AddressFamily, host: str) -> int:
        sock = socket.socket(family, socket.SOCK_STREAM)
        opened.append(sock)
        sock.bind((host, 0))
        sock.listen()
        return sock.getsockname()[1]

    try:
        yield {
            "v4-loopback": listen(socket.AF_INET, "127.0.0.1"),
            "v4-wildcard": listen(socket.AF_INET, "0.0.0.0"),
            "v6-wildcard": listen(socket.AF_INET6, "::"),
            "v6-loopback": listen(socket.AF_INET6, "::1"),
        }
    finally:
        for sock in opened:
            sock.close()


def test_discovers_this_process_real_listeners(listening_sockets: dict[str, int]) -> None:
    found = {e.port: e.host for e in ports.discover(Path("/proc"), os.getpid())}
    assert found[listening_sockets["v4-loopback"]] == "127.0.0.1"
    assert found[listening_sockets["v4-wildcard"]] == "127.0.0.1"
    assert found[listening_sockets["v6-wildcard"]] == "::1"
    assert found[listening_sockets["v6-loopback"]] == "::1"
    for host_port in listening_sockets.values():  # each answers where we say it does
        with socket.create_connection((found[host_port], host_port), timeout=2):
            pass


def test_other_processes_listeners_are_not_ours(listening_sockets: dict[str, int]) -> None:
    # pid 1 shares the network namespace but owns none of these sockets
    found = {e.port for e in ports.discover(Path("/proc"), 1)}
    assert not found & set(listening_sockets.values())


def test_vanished_process_raises() -> None:
    with pytest.raises(OSError):
        ports.discover(Path("/proc"), 2**22 + 1)
