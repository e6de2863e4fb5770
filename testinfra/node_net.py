"""The test node's pod network: one Linux bridge with a private /24, nothing routed away.

Pods get addresses from the CNI `bridge` plugin (host-local IPAM) on a bridge this module
creates with the gateway address already on it, so the kubelet can use that address as the
node's and the API server can reach pod IPs (the webhook, through endpoint routing). Pods
have no default route and the host does not forward (ip_forward stays as it is: 0 here), so
no pod packet can leave this machine. Host services that listen on loopback (the API
server, MinIO) are published to the pods by DNAT rules that match only packets arriving on
this bridge, the way kube-proxy publishes a ClusterIP; `route_localnet` on the bridge (and
on no other interface) lets such packets reach 127.0.0.1.
"""

import ipaddress
import json
import random
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

CNI_BIN_DIR = Path("/usr/lib/cni")
NETWORK_NAME = "oomdump-node"


class NetworkError(RuntimeError):
    """Setting up the pod network failed; the message carries the command's output."""


def _run(args: list[str], check: bool = True) -> str:
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)
    if check and result.returncode != 0:
        raise NetworkError(f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def _used_networks() -> list[ipaddress.IPv4Network]:
    networks = []
    for line in _run(["ip", "-4", "-o", "addr", "show"]).splitlines():
        for word in line.split():
            if "/" in word and word[0].isdigit():
                networks.append(ipaddress.ip_interface(word).network)
    for line in _run(["ip", "-4", "route", "show", "table", "all"]).splitlines():
        word = line.split()[0] if line.split() else ""
        if word and word[0].isdigit():
            networks.append(ipaddress.ip_network(word, strict=False))
    return networks


def free_subnet(rng: random.Random | None = None) -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/13 that no address or route on this machine overlaps."""
    rng = rng or random.Random()
    used = _used_networks()
    for _ in range(200):
        candidate = ipaddress.ip_network(f"10.{rng.randrange(200, 208)}.{rng.randrange(256)}.0/24")
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise NetworkError("no free /24 in 10.200.0.0/13")


@dataclass
class PodNetwork:
    """The bridge, its subnet and the DNAT rules that publish loopback services to pods."""

    bridge: str
    subnet: ipaddress.IPv4Network
    conf_dir: Path
    ipam_dir: Path
    chain: str = ""
    _rules: list[list[str]] = field(default_factory=list)
    _routed: list[ipaddress.IPv4Network] = field(default_factory=list)

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    def publish(self, address: str, port: int, loopback_port: int, protocol: str = "tcp") -> None:
        """Pods connecting to address:port reach 127.0.0.1:loopback_port on the host."""
        rule = [
            "-d", address, "-p", protocol, "--dport", str(port),
            "-j", "DNAT", "--to-destination", f"127.0.0.1:{loopback_port}",
        ]  # fmt: skip
        _run(["iptables", "-t", "nat", "-A", self.chain, *rule])
        self._rules.append(rule)

    def routes(self) -> list[str]:
        return [str(network) for network in self._routed]


def create_network(workdir: Path, routed: list[str]) -> PodNetwork:
    """The bridge up with its gateway address, the CNI config written, the DNAT chain hooked
    to PREROUTING for this bridge only. `routed`: extra destinations (e.g. the Service CIDR)
    the pods reach through the gateway."""
    suffix = secrets.token_hex(3)
    network = PodNetwork(
        bridge=f"oomd{suffix}",
        subnet=free_subnet(),
        conf_dir=workdir / "cni" / "net.d",
        ipam_dir=workdir / "cni" / "ipam",
        chain=f"OOMDUMP-NODE-{suffix.upper()}",
        _routed=[ipaddress.ip_network(cidr) for cidr in routed],
    )
    try:
        _run(["ip", "link", "add", network.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{network.gateway}/{network.subnet.prefixlen}", "dev",
              network.bridge])  # fmt: skip
        _run(["ip", "link", "set", network.bridge, "up"])
        Path(f"/proc/sys/net/ipv4/conf/{network.bridge}/route_localnet").write_text("1")
        _run(["iptables", "-t", "nat", "-N", network.chain])
        _run(["iptables", "-t", "nat", "-A", "PREROUTING", "-i", network.bridge,
              "-j", network.chain])  # fmt: skip
        _write_cni_config(network)
    except BaseException:
        delete_network(network)
        raise
    return network


def _write_cni_config(network: PodNetwork) -> None:
    network.conf_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge,
                "isGateway": True,
                # No default route: a pod reaches the gateway's published services only.
                "isDefaultGateway": False,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(network.ipam_dir),
                    "ranges": [[{"subnet": str(network.subnet), "gateway": network.gateway}]],
                    "routes": [{"dst": cidr, "gw": network.gateway} for cidr in network.routes()],
                },
            }
        ],
    }
    (network.conf_dir / "10-oomdump.conflist").write_text(json.dumps(config, indent=2))


def delete_network(network: PodNetwork) -> None:
    """Remove the chain, its hook and the bridge; each step runs even when one fails."""
    if network.chain:
        _run(["iptables", "-t", "nat", "-D", "PREROUTING", "-i", network.bridge,
              "-j", network.chain], check=False)  # fmt: skip
        _run(["iptables", "-t", "nat", "-F", network.chain], check=False)
        _run(["iptables", "-t", "nat", "-X", network.chain], check=False)
    _run(["ip", "link", "del", network.bridge], check=False)
