"""Services for the test node's pods, as a cluster gives them: kube-proxy (ClusterIPs) and
CoreDNS (`<service>.<namespace>.svc` names).

Both are the real programs, built from the Go module proxy and cached by version. kube-proxy
runs in nftables mode, so its rules live in nft tables of their own (`ip kube-proxy`,
`ip6 kube-proxy`) rather than in the host's iptables chains, with `masqueradeAll` so a pod's
connection to a ClusterIP is answered back through the node (pod to pod on one bridge would
otherwise bypass the reverse NAT); it serves NodePorts on the bridge's gateway only and
leaves conntrack sysctls alone. CoreDNS answers the cluster zone only and forwards nothing,
so no DNS query leaves this machine; pods reach it at the gateway (DNAT on the pod bridge,
see testinfra.node_net). Only one node may run on a machine at a time: kube-proxy's tables
have fixed names.
"""

import subprocess
import urllib.request
from contextlib import ExitStack, suppress
from pathlib import Path

import yaml

from testinfra.gobuild import build_from_module
from testinfra.kubebuild import kube_proxy_binary
from testinfra.netutil import free_port
from testinfra.node_net import PodNetwork
from testinfra.process import start_process, stop_process, wait_until

COREDNS_VERSION = "v1.15.0"
CLUSTER_DOMAIN = "cluster.local"
READY_TIMEOUT = 60.0


def coredns_binary() -> Path:
    """The cached CoreDNS of COREDNS_VERSION, built on first use."""
    go_mod = (
        "module oomdump.test/coredns\n\n"
        "go 1.26.0\n\n"
        f"require github.com/coredns/coredns {COREDNS_VERSION}\n"
    )
    return build_from_module("coredns", COREDNS_VERSION, go_mod, "github.com/coredns/coredns")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _delete_kube_proxy_tables() -> None:
    for family in ("ip", "ip6"):
        subprocess.run(
            ["nft", "delete", "table", family, "kube-proxy"],
            capture_output=True,
            check=False,
            timeout=30,
        )


def start_kube_proxy(
    stack: ExitStack, workdir: Path, kubeconfig: Path, node_name: str, network: PodNetwork
) -> subprocess.Popen[bytes]:
    """kube-proxy for `node_name`, ready (its healthz answers) when this returns; its tables
    are removed when `stack` closes."""
    health_port = free_port()
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "nftables",
        "hostnameOverride": node_name,
        "clusterCIDR": str(network.subnet),
        "detectLocalMode": "ClusterCIDR",
        "healthzBindAddress": f"127.0.0.1:{health_port}",
        "metricsBindAddress": f"127.0.0.1:{free_port()}",
        "nodePortAddresses": [f"{network.gateway}/32"],
        # Zeros leave the machine's conntrack sysctls as they are.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        "nftables": {"masqueradeAll": True, "syncPeriod": "5s", "minSyncPeriod": "0s"},
    }  # fmt: skip
    path = workdir / "kube-proxy-config.yaml"
    path.write_text(yaml.safe_dump(config))
    log = workdir / "kube-proxy.log"
    stack.callback(_delete_kube_proxy_tables)
    process = start_process([str(kube_proxy_binary()), f"--config={path}", "--v=2"], log)
    stack.callback(stop_process, process)
    wait_until(
        lambda: _http_ok(f"http://127.0.0.1:{health_port}/healthz"),
        what="kube-proxy",
        timeout=READY_TIMEOUT,
        process=process,
        log_path=log,
    )
    return process


def start_coredns(
    stack: ExitStack, workdir: Path, kubeconfig: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """CoreDNS on 127.0.0.1 serving the cluster zone from the API server; (process, port)."""
    port = free_port()
    ready_port = free_port()
    corefile = workdir / "Corefile"
    corefile.write_text(
        f"{CLUSTER_DOMAIN}:{port} {{\n"
        "    bind 127.0.0.1\n"
        "    errors\n"
        f"    ready 127.0.0.1:{ready_port}\n"
        f"    kubernetes {CLUSTER_DOMAIN} {{\n"
        f"        kubeconfig {kubeconfig}\n"
        "    }\n"
        "}\n"
    )
    log = workdir / "coredns.log"
    process = start_process([str(coredns_binary()), "-conf", str(corefile)], log, cwd=workdir)
    stack.callback(stop_process, process)
    wait_until(
        lambda: _http_ok(f"http://127.0.0.1:{ready_port}/ready"),
        what="CoreDNS",
        timeout=READY_TIMEOUT,
        process=process,
        log_path=log,
    )
    return process, port


def publish_dns(network: PodNetwork, port: int) -> None:
    """Pods' DNS queries to the gateway reach CoreDNS on loopback (UDP and TCP)."""
    for protocol in ("udp", "tcp"):
        network.publish(network.gateway, 53, port, protocol=protocol)


def allow_service_forwarding(stack: ExitStack, network: PodNetwork) -> None:
    """Let the node route a pod's ClusterIP connection back onto the pod bridge (and
    nowhere else): forwarding on for packets that arrive on the bridge, and a FORWARD rule
    that drops any of them leaving by another interface."""
    rule = ["FORWARD", "-i", network.bridge, "!", "-o", network.bridge, "-j", "DROP"]
    subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True, timeout=30)

    def remove() -> None:
        with suppress(subprocess.SubprocessError):
            subprocess.run(["iptables", "-D", *rule], capture_output=True, timeout=30)

    stack.callback(remove)
    Path(f"/proc/sys/net/ipv4/conf/{network.bridge}/forwarding").write_text("1")
