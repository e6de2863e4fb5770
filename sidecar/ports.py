"""The TCP ports a process itself listens on, and the address to reach each one.

Socket inodes from /proc/<pid>/fd are matched to LISTEN rows (state 0A) of
/proc/<pid>/net/tcp and tcp6, so a process is only ever asked on its own ports, even in a
pod where every container shares the network namespace.

Where a socket is bound is the app's choice, and `IP_FREEBIND` lets it bind an address it
does not own: a listener counts only when bound to a wildcard, loopback, or an address the
network namespace itself owns (its LOCAL routes in /proc/<pid>/net/fib_trie and its
/proc/<pid>/net/if_inet6), so the watcher never connects off the pod. At most
MAX_ENDPOINTS ports per process are asked (the lowest), so an app cannot make it open
thousands of connections.
"""

import ipaddress
import os
from collections.abc import Callable, Hashable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

TCP_LISTEN = "0A"
MAX_ENDPOINTS = 8
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, order=True)
class Endpoint:
    port: int
    host: str  # the address to connect to (wildcards become loopback)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Listener:
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    inode: int


def _decode_address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_address)
    # The kernel prints each 32-bit word in host (little-endian) byte order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return ipaddress.IPv4Address(words)
    address = ipaddress.IPv6Address(words)
    return address.ipv4_mapped or address


def parse_tcp_table(text: str) -> list[Listener]:
    """LISTEN rows of a /proc/net/tcp or tcp6 text."""
    listeners: list[Listener] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != TCP_LISTEN:
            continue
        hex_address, _, hex_port = fields[1].partition(":")
        listeners.append(Listener(_decode_address(hex_address), int(hex_port, 16), int(fields[9])))
    return listeners


def socket_inodes(proc_root: Path, pid: int) -> set[int]:
    """Inodes of the sockets open in `pid` (fds vanish while we read: they are skipped)."""
    fd_dir = f"{proc_root}/{pid}/fd"
    return _socket_inodes(fd_dir, os.listdir(fd_dir))


def _socket_inodes(fd_dir: str, names: list[str]) -> set[int]:
    inodes: set[int] = set()
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _connect_host(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "::1"
    return str(address)


def reachable_in_pod(address: Address, local: frozenset[Address]) -> bool:
    """Whether connecting to a listener bound to `address` stays inside the pod."""
    return address.is_unspecified or address.is_loopback or address in local


def endpoints(
    listeners: list[Listener], inodes: set[int], local: frozenset[Address] = frozenset()
) -> list[Endpoint]:
    """One endpoint per port the process listens on in the pod (see the module's doc),
    IPv4 preferred when bound on both; the lowest MAX_ENDPOINTS ports."""
    chosen: dict[int, Listener] = {}
    for listener in listeners:
        if listener.inode not in inodes or not reachable_in_pod(listener.address, local):
            continue
        current = chosen.get(listener.port)
        if current is None or _preference(listener) < _preference(current):
            chosen[listener.port] = listener
    found = sorted(Endpoint(port, _connect_host(lst.address)) for port, lst in chosen.items())
    return found[:MAX_ENDPOINTS]


def _preference(listener: Listener) -> tuple[int, int]:
    # Loopback or wildcard first (always reachable from the sidecar), IPv4 before IPv6.
    address = listener.address
    local = address.is_loopback or address.is_unspecified
    return (0 if local else 1, 0 if address.version == 4 else 1)


def discover(proc_root: Path, pid: int) -> list[Endpoint]:
    """The process's own listening endpoints; OSError when it vanished or is unreadable."""
    inodes = socket_inodes(proc_root, pid)
    if not inodes:
        return []
    return endpoints(read_tcp_tables(proc_root, pid), inodes, local_addresses(proc_root, pid))


def fixed(ports: tuple[int, ...]) -> list[Endpoint]:
    """PPROF_PORTS: the same ports for every process, on loopback."""
    return [Endpoint(port, "127.0.0.1") for port in ports]


def net_namespace(proc_root: Path, pid: int) -> int | None:
    """The inode of the process's network namespace; None when it cannot be told (test
    trees have no ns/net), and then its tables are never shared with another process."""
    try:
        return os.stat(proc_root / str(pid) / "ns" / "net").st_ino
    except OSError:
        return None


TABLE_MAX = 64 * 1024 * 1024  # bounded reads of the kernel's per-namespace tables


def _read_table(path: Path) -> str:
    with open(path, "rb") as handle:
        return handle.read(TABLE_MAX).decode(errors="replace")


def parse_local_v4(fib_trie: str) -> set[ipaddress.IPv4Address]:
    """The addresses of `/32 host LOCAL` routes in a /proc/net/fib_trie text."""
    local: set[ipaddress.IPv4Address] = set()
    previous = ""
    for line in fib_trie.splitlines():
        text = line.strip()
        if text.startswith("/32 host LOCAL") and previous.startswith("|-- "):
            local.add(ipaddress.IPv4Address(previous[4:].strip()))
        previous = text
    return local


def parse_local_v6(if_inet6: str) -> set[ipaddress.IPv6Address]:
    """The addresses in a /proc/net/if_inet6 text."""
    local: set[ipaddress.IPv6Address] = set()
    for line in if_inet6.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            local.add(ipaddress.IPv6Address(bytes.fromhex(fields[0])))
    return local


def local_addresses(proc_root: Path, pid: int) -> frozenset[Address]:
    """The addresses the process's network namespace owns (none when unreadable)."""
    net = proc_root / str(pid) / "net"
    found: set[Address] = set()
    with suppress(OSError, ValueError):
        found |= parse_local_v4(_read_table(net / "fib_trie"))
    with suppress(OSError, ValueError):
        found |= parse_local_v6(_read_table(net / "if_inet6"))
    return frozenset(found)


def read_tcp_tables(proc_root: Path, pid: int) -> list[Listener]:
    """LISTEN rows of /proc/<pid>/net/tcp and tcp6; OSError when the process vanished."""
    listeners: list[Listener] = []
    for table in ("tcp", "tcp6"):
        try:
            listeners += parse_tcp_table(_read_table(proc_root / str(pid) / "net" / table))
        except FileNotFoundError:
            continue  # no IPv6 in this kernel or namespace
    return listeners


# A settled process whose fd count did not change is not listed again, except at least
# once every FULL_LOOK_EVERY looks (a socket swapped for another keeps the count).
FULL_LOOK_EVERY = 15


@dataclass
class _Known:
    inodes: frozenset[int]
    found: list[Endpoint]
    settled: bool  # the inode set was already the same at the previous look
    # The number of open fds when /proc/<pid>/fd reports it as its size (Linux >= 6.2;
    # checked against the listing), else None and the fds are listed at every look.
    fd_count: int | None
    looks_since_listed: int = 0


class PortFinder:
    """`discover` for a watch loop that asks again every refresh, without the cost.

    Reading /proc/<pid>/net/tcp makes the kernel walk the whole socket table of the
    namespace (milliseconds on a busy node), so the tables are read only when the socket
    inodes in /proc/<pid>/fd changed, and then at most once per network namespace per
    refresh (`begin` starts one). A socket is created before it listens, so a changed inode
    set is trusted only after one more look at the tables (the next refresh). Listing the
    fds costs ~60 µs a process, so a settled process is listed again only when its fd count
    changed (see FULL_LOOK_EVERY).
    """

    def __init__(
        self, proc_root: Path, read_tables: Callable[[Path, int], list[Listener]] = read_tcp_tables
    ) -> None:
        self._proc_root = proc_root
        self._read_tables = read_tables
        self._known: dict[Hashable, _Known] = {}
        # this refresh's listeners and local addresses, by netns inode
        self._tables: dict[int, tuple[list[Listener], frozenset[Address]]] = {}

    def begin(self) -> None:
        """A new refresh: tables read before may be out of date."""
        self._tables = {}

    def find(self, key: Hashable, pid: int) -> list[Endpoint]:
        """The process's listening endpoints; OSError when it vanished or is unreadable."""
        fd_dir = f"{self._proc_root}/{pid}/fd"
        size = os.stat(fd_dir).st_size
        known = self._known.get(key)
        if (
            known is not None
            and known.settled
            and known.fd_count == size
            and known.looks_since_listed < FULL_LOOK_EVERY
        ):
            known.looks_since_listed += 1
            return known.found
        names = os.listdir(fd_dir)
        inodes = frozenset(_socket_inodes(fd_dir, names))
        fd_count = size if size == len(names) else None
        if known is not None and known.inodes == inodes and known.settled:
            known.fd_count, known.looks_since_listed = fd_count, 0
            return known.found
        found: list[Endpoint] = []
        if inodes:
            listeners, local = self._tables_of(pid)
            found = endpoints(listeners, set(inodes), local)
        stable = known is not None and known.inodes == inodes
        self._known[key] = _Known(inodes, found, settled=stable or not inodes, fd_count=fd_count)
        return found

    def forget(self, keys: Iterable[Hashable]) -> None:
        for key in keys:
            self._known.pop(key, None)

    def _tables_of(self, pid: int) -> tuple[list[Listener], frozenset[Address]]:
        namespace = net_namespace(self._proc_root, pid)
        tables = self._tables.get(namespace) if namespace is not None else None
        if tables is None:
            tables = (
                self._read_tables(self._proc_root, pid),
                local_addresses(self._proc_root, pid),
            )
            if namespace is not None:
                self._tables[namespace] = tables
        return tables
