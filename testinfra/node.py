"""One real node for the test cluster: kube-controller-manager, kube-scheduler, containerd,
a kubelet, kube-proxy and CoreDNS, on top of testinfra.cluster's etcd and kube-apiserver.

The kubelet is 1.35 (testinfra.kubebuild.KUBELET_VERSION: the last with containerd 1.x and
cgroup v1), cgroupfs-driven under a cgroup root of its own, so its pods live below
/sys/fs/cgroup/<controller>/<cgroup root>/kubepods and nowhere else. Everything the node
starts is stopped and removed on exit, failed tests included: processes, shims and
containers, mounts, network namespaces, the bridge and its DNAT chain, the cgroups.
"""

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import yaml

from testinfra.cluster import SERVICE_CIDR, Cluster, _write_kubeconfig
from testinfra.image import PAUSE_IMAGE
from testinfra.kubebuild import (
    kube_controller_manager_binary,
    kube_scheduler_binary,
    kubelet_binary,
)
from testinfra.netutil import free_port
from testinfra.node_containerd import (
    Containerd,
    kill_shims,
    netns_snapshot,
    remove_new_netns,
    start_containerd,
    unmount_below,
)
from testinfra.node_net import PodNetwork, create_network, delete_network
from testinfra.node_services import (
    CLUSTER_DOMAIN,
    allow_service_forwarding,
    publish_dns,
    start_coredns,
    start_kube_proxy,
)
from testinfra.process import ProcessDied, log_tail, start_process, stop_process, wait_until

NODE_READY_TIMEOUT = 120.0
CGROUP_ROOT = Path("/sys/fs/cgroup")
API_SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service's ClusterIP in SERVICE_CIDR


@dataclass
class Node:
    name: str
    workdir: Path
    network: PodNetwork
    containerd: Containerd
    cgroup_root: str
    kubelet_root: Path
    kubelet_log: Path
    processes: dict[str, subprocess.Popen[bytes]]

    def cgroup(self, controller: str) -> Path:
        """The node's cgroup folder for `controller`; its pods are below `kubepods`."""
        return CGROUP_ROOT / controller / self.cgroup_root.lstrip("/")

    def pod_dir(self, uid: str) -> Path:
        """The kubelet's folder of a pod (its volumes: emptyDirs under volumes/)."""
        return self.kubelet_root / "pods" / uid


def _component_kubeconfig(cluster: Cluster, folder: Path, name: str, cn: str, org: str) -> Path:
    assert cluster.ca is not None, "running_cluster(for_nodes=True) is needed"
    pair = cluster.ca.issue(folder, name, cn, organizations=(org,))
    path = folder / f"{name}.kubeconfig"
    _write_kubeconfig(path, cluster.server_url, cluster.ca.cert_path, pair.cert_path, pair.key_path)
    return path


def _start_control_plane(stack: ExitStack, cluster: Cluster, workdir: Path) -> dict:
    processes = {}
    config = _component_kubeconfig(
        cluster, workdir, "kube-controller-manager", "system:kube-controller-manager",
        "system:kube-controller-manager",
    )  # fmt: skip
    args = [
        str(kube_controller_manager_binary()),
        f"--kubeconfig={config}",
        f"--authentication-kubeconfig={config}",
        f"--authorization-kubeconfig={config}",
        "--bind-address=127.0.0.1",
        f"--secure-port={free_port()}",
        "--leader-elect=false",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={cluster.service_account_key}",
        f"--root-ca-file={cluster.ca.cert_path if cluster.ca else ''}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--allocate-node-cidrs=false",
        "--controllers=*,-nodeipam",
        "--profiling=false",
    ]
    process = start_process(args, workdir / "kube-controller-manager.log")
    stack.callback(stop_process, process)
    processes["kube-controller-manager"] = process
    config = _component_kubeconfig(
        cluster, workdir, "kube-scheduler", "system:kube-scheduler", "system:kube-scheduler"
    )
    args = [
        str(kube_scheduler_binary()),
        f"--kubeconfig={config}",
        f"--authentication-kubeconfig={config}",
        f"--authorization-kubeconfig={config}",
        "--bind-address=127.0.0.1",
        f"--secure-port={free_port()}",
        "--leader-elect=false",
        "--profiling=false",
    ]
    process = start_process(args, workdir / "kube-scheduler.log")
    stack.callback(stop_process, process)
    processes["kube-scheduler"] = process
    return processes


def _kubelet_config(node: Node, cluster: Cluster, serving_cert: Path, serving_key: Path) -> dict:
    assert cluster.ca is not None
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine runs cgroup v1 (which 1.35 refuses unless told) and no systemd.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": node.cgroup_root,
        "cgroupsPerQOS": True,
        "containerRuntimeEndpoint": node.containerd.endpoint,
        "address": node.network.gateway,
        "port": free_port(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": free_port(),
        "tlsCertFile": str(serving_cert),
        "tlsPrivateKeyFile": str(serving_key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(cluster.ca.cert_path)},
        },
        # Only a certificate from the cluster CA gets this far (the API server's).
        "authorization": {"mode": "AlwaysAllow"},
        "podLogsDir": str(node.workdir / "pod-logs"),
        "registerNode": True,
        "failSwapOn": False,
        "serializeImagePulls": False,
        "resolvConf": "",
        # CoreDNS, published at the gateway (testinfra.node_services).
        "clusterDNS": [node.network.gateway],
        "clusterDomain": CLUSTER_DOMAIN,
        # A shared machine's disk and memory must not evict the test's pods.
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "imageMinimumGCAge": "24h",
        "nodeStatusUpdateFrequency": "2s",
        "syncFrequency": "5s",
        "fileCheckFrequency": "5s",
        "localStorageCapacityIsolation": True,
        "shutdownGracePeriod": "0s",
        "protectKernelDefaults": False,
    }  # fmt: skip


def _kill_cgroup_tree(folder: Path) -> None:
    """SIGKILL every process below `folder` (a v1 hierarchy), then remove its groups."""
    if not folder.is_dir():
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = set()
        for procs in folder.rglob("cgroup.procs"):
            with suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
        if not pids:
            break
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    for group in sorted(
        (p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
    ):
        with suppress(OSError):
            group.rmdir()
    with suppress(OSError):
        folder.rmdir()


def _controllers() -> list[Path]:
    return sorted(p for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink())


def _create_cgroups(cgroup_root: str) -> None:
    """The kubelet's cgroup root in every hierarchy (it refuses to start without them)."""
    for controller in _controllers():
        folder = controller / cgroup_root.lstrip("/")
        folder.mkdir(exist_ok=True)
        if controller.name == "cpuset":
            # A new cpuset group starts with no CPUs or memory nodes; the root's are the node's.
            for name in ("cpuset.cpus", "cpuset.mems"):
                (folder / name).write_text((controller / name).read_text())


def _cleanup_cgroups(cgroup_root: str) -> None:
    for controller in _controllers():
        _kill_cgroup_tree(controller / cgroup_root.lstrip("/"))


def _node_ready(cluster: Cluster, name: str) -> bool:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        node = client.CoreV1Api(cluster.api_client()).read_node(name)
    except ApiException:
        return False
    conditions = node.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _leave_api_service_to_the_node(cluster: Cluster) -> None:
    from kubernetes import client

    client.CoreV1Api(cluster.api_client()).patch_namespaced_service(
        "kubernetes",
        "default",
        {"metadata": {"labels": {"service.kubernetes.io/service-proxy-name": "oomdump-node"}}},
    )


@contextmanager
def running_node(cluster: Cluster, workdir: Path, images: dict[str, Path]) -> Iterator[Node]:
    """A Ready node named `oomdump-node-<hex>` with `images` (name -> docker-archive) in its
    containerd, and the control-plane controllers and scheduler running."""
    suffix = secrets.token_hex(3)
    name = f"oomdump-node-{suffix}"
    cgroup_root = f"/oomdump-node-{suffix}"
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        processes = _start_control_plane(stack, cluster, workdir)
        network = create_network(workdir, routed=[SERVICE_CIDR])
        stack.callback(delete_network, network)
        assert cluster.ca is not None
        api_port = int(cluster.server_url.rsplit(":", 1)[1])
        network.publish(API_SERVICE_IP, 443, api_port)

        netns_before = netns_snapshot()
        containerd_dir = workdir / "containerd"
        # Registered before containerd starts: run in reverse, after containerd stopped.
        stack.callback(_remove_below, workdir)
        stack.callback(remove_new_netns, netns_before)
        stack.callback(_cleanup_cgroups, cgroup_root)
        _create_cgroups(cgroup_root)
        stack.callback(kill_shims, containerd_dir / "containerd.sock")
        containerd = start_containerd(containerd_dir, network, PAUSE_IMAGE)
        stack.callback(stop_process, containerd.process)
        for archive in images.values():
            containerd.import_image(archive)

        allow_service_forwarding(stack, network)
        coredns, dns_port = start_coredns(
            stack,
            workdir,
            # CoreDNS reads Services, EndpointSlices and Namespaces cluster-wide.
            _component_kubeconfig(cluster, workdir, "coredns", "oomdump:coredns",
                                  "system:masters"),
        )  # fmt: skip
        processes["coredns"] = coredns
        publish_dns(network, dns_port)

        kubelet_root = workdir / "kubelet"
        node = Node(
            name=name,
            workdir=workdir,
            network=network,
            containerd=containerd,
            cgroup_root=cgroup_root,
            kubelet_root=kubelet_root,
            kubelet_log=workdir / "kubelet.log",
            processes=processes,
        )
        kubeconfig = _component_kubeconfig(
            cluster, workdir, "kubelet", f"system:node:{name}", "system:nodes"
        )
        serving = cluster.ca.issue(
            workdir, "kubelet-serving", name, dns_names=(name,),
            ip_addresses=(network.gateway,), server=True,
        )  # fmt: skip
        config = workdir / "kubelet-config.yaml"
        config.write_text(
            yaml.safe_dump(_kubelet_config(node, cluster, serving.cert_path, serving.key_path))
        )
        args = [
            str(kubelet_binary()),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={kubelet_root}",
            f"--hostname-override={name}",
            f"--node-ip={network.gateway}",
            "--v=2",
        ]
        kubelet = start_process(args, node.kubelet_log)
        stack.callback(stop_process, kubelet)
        processes["kubelet"] = kubelet
        wait_until(
            lambda: _node_ready(cluster, name),
            what=f"node {name} Ready",
            timeout=NODE_READY_TIMEOUT,
            process=kubelet,
            log_path=node.kubelet_log,
        )
        # The API server listens on loopback, which no EndpointSlice may name: its Service
        # is published by the DNAT above, and kube-proxy is told to leave it alone.
        _leave_api_service_to_the_node(cluster)
        # kube-proxy reports healthy once it sees its Node.
        processes["kube-proxy"] = start_kube_proxy(
            stack,
            workdir,
            _component_kubeconfig(
                cluster, workdir, "kube-proxy", "system:kube-proxy", "system:node-proxier"
            ),
            name,
            network,
        )
        for component, process in processes.items():
            if process.poll() is not None:
                raise ProcessDied(
                    f"{component} exited with {process.returncode}:\n"
                    + log_tail(workdir / f"{component}.log")
                )
        yield node


def _remove_below(workdir: Path) -> None:
    unmount_below(workdir)
