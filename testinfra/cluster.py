"""A real kube-apiserver backed by a real etcd, on loopback, for end-to-end tests.

No controller-manager, scheduler or kubelet runs: pods are admitted and stored, never
scheduled, which is all an admission webhook needs. Authentication is by client certificate
(the admin is in `system:masters`), authorization is RBAC, and the default admission
plugins stay on, ServiceAccount and MutatingAdmissionWebhook included. Because no
controller creates the `default` ServiceAccount, `create_namespace` makes it, as a real
cluster would, so pods get the projected token volume real pods carry.

Run by hand: `python -m testinfra.cluster [--for 10m]` prints the kubeconfig to export.
"""

import argparse
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from oomdump.durations import parse_duration
from testinfra.kubebuild import ETCD_VERSION, KUBERNETES_VERSION, etcd_binary, kube_apiserver_binary
from testinfra.netutil import free_port
from testinfra.pki import CertificateAuthority, create_ca, write_service_account_key
from testinfra.process import start_process, stop_process, wait_until

READY_TIMEOUT = 90.0
SERVICE_CIDR = "10.0.0.0/24"


@dataclass
class Cluster:
    """A running API server: where it listens and how to authenticate as admin."""

    workdir: Path
    server_url: str
    kubeconfig: Path
    ca_path: Path
    admin_cert: Path
    admin_key: Path
    apiserver_log: Path
    etcd_log: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Set by running_cluster(for_nodes=True): what a node's components need to join.
    ca: CertificateAuthority | None = None
    service_account_key: Path | None = None

    def api_client(self) -> Any:
        """A fresh `kubernetes.client.ApiClient` authenticated as the cluster admin."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        context.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        return context

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET `path` from the API server as admin; (status, body), 0 when unreachable."""
        request = urllib.request.Request(self.server_url + path)
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.ssl_context()) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")
        except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
            return 0, ""

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        """Create a namespace and its `default` ServiceAccount (no controller makes it)."""
        from kubernetes import client

        api = client.CoreV1Api(self.api_client())
        api.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels or {}))
        )
        api.create_namespaced_service_account(
            name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="default"))
        )


def _write_kubeconfig(path: Path, server_url: str, ca: Path, cert: Path, key: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "oomdump-test",
                "cluster": {"server": server_url, "certificate-authority": str(ca)},
            }
        ],
        "users": [
            {"name": "admin", "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [
            {"name": "oomdump-test", "context": {"cluster": "oomdump-test", "user": "admin"}}
        ],
        "current-context": "oomdump-test",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _server_env() -> dict[str, str]:
    # A proxy setting would route the API server's webhook calls away from loopback.
    skip = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    return {k: v for k, v in os.environ.items() if k.lower() not in skip}


def _etcd_healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return b'"health":"true"' in response.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _start_etcd(stack: ExitStack, workdir: Path, log: Path) -> int:
    client_port, peer_port = free_port(), free_port()
    peer_url = f"http://127.0.0.1:{peer_port}"
    client_url = f"http://127.0.0.1:{client_port}"
    args = [
        str(etcd_binary()),
        "--name=default",
        f"--data-dir={workdir / 'etcd'}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=default={peer_url}",
        # Test data is thrown away: skip fsync, the slowest part of etcd on a small disk.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]
    process = start_process(args, log, _server_env())
    stack.callback(stop_process, process)
    wait_until(
        lambda: _etcd_healthy(client_port),
        what="etcd",
        timeout=READY_TIMEOUT,
        process=process,
        log_path=log,
    )
    return client_port


def _node_args(ca: CertificateAuthority, pki: Path) -> list[str]:
    """API server flags for a cluster with nodes (testinfra.node): the NodeRestriction
    admission plugin, the API server's own client certificate for their logs and exec, and webhooks
    called at their endpoints (there is no kube-proxy here to route a ClusterIP)."""
    client = ca.issue(
        pki, "apiserver-kubelet-client", "kube-apiserver-kubelet-client",
        organizations=("system:masters",),
    )  # fmt: skip
    return [
        "--enable-admission-plugins=NodeRestriction",
        "--enable-aggregator-routing=true",
        f"--kubelet-client-certificate={client.cert_path}",
        f"--kubelet-client-key={client.key_path}",
        f"--kubelet-certificate-authority={ca.cert_path}",
        "--kubelet-preferred-address-types=InternalIP",
    ]


@contextmanager
def running_cluster(workdir: Path | None = None, *, for_nodes: bool = False) -> Iterator[Cluster]:
    """etcd + kube-apiserver on free loopback ports, stopped and cleaned up on exit.

    With no `workdir`, a temporary folder holds data, certificates and logs and is removed
    afterwards; a given `workdir` is kept (its logs help after a failure). `for_nodes`
    prepares the API server for kubelets (see testinfra.node), which the cluster's `ca` and
    `service_account_key` then let join.
    """
    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="oomdump-cluster-"))
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        workdir.mkdir(parents=True, exist_ok=True)
        pki = workdir / "pki"
        ca = create_ca(pki)
        serving = ca.issue(
            pki,
            "apiserver",
            "kube-apiserver",
            dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
            ip_addresses=("127.0.0.1", "10.0.0.1"),
            server=True,
        )
        admin = ca.issue(pki, "admin", "oomdump-test-admin", organizations=("system:masters",))
        sa_key = write_service_account_key(pki)

        etcd_log = workdir / "etcd.log"
        apiserver_log = workdir / "kube-apiserver.log"
        binary = kube_apiserver_binary()
        etcd_port = _start_etcd(stack, workdir, etcd_log)

        port = free_port()
        server_url = f"https://127.0.0.1:{port}"
        args = [
            str(binary),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--secure-port={port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--cert-dir={workdir / 'apiserver-certs'}",
            f"--tls-cert-file={serving.cert_path}",
            f"--tls-private-key-file={serving.key_path}",
            f"--client-ca-file={ca.cert_path}",
            f"--service-account-key-file={sa_key}",
            f"--service-account-signing-key-file={sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Nodes' kubelets are authorized by the Node authorizer, everyone else by RBAC.
            "--authorization-mode=Node,RBAC" if for_nodes else "--authorization-mode=RBAC",
            "--allow-privileged=true",
            # The `kubernetes` Service endpoint would point at loopback, which validation
            # refuses; nothing here needs it.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ]
        if for_nodes:
            args += _node_args(ca, pki)
        process = start_process(args, apiserver_log, _server_env())
        stack.callback(stop_process, process)

        kubeconfig = workdir / "kubeconfig"
        _write_kubeconfig(kubeconfig, server_url, ca.cert_path, admin.cert_path, admin.key_path)
        cluster = Cluster(
            workdir=workdir,
            server_url=server_url,
            kubeconfig=kubeconfig,
            ca_path=ca.cert_path,
            admin_cert=admin.cert_path,
            admin_key=admin.key_path,
            apiserver_log=apiserver_log,
            etcd_log=etcd_log,
            processes={"kube-apiserver": process},
            ca=ca if for_nodes else None,
            service_account_key=sa_key if for_nodes else None,
        )
        wait_until(
            lambda: cluster.get("/readyz")[0] == 200,
            what="kube-apiserver /readyz",
            timeout=READY_TIMEOUT,
            process=process,
            log_path=apiserver_log,
        )
        yield cluster


def stop_on_signals() -> None:
    """SIGTERM stops as Ctrl-C does, so what a command made is removed too; SIGINT is set
    explicitly because a shell starting us in the background leaves it ignored."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_while_alive(processes: dict[str, subprocess.Popen[bytes]], duration: float | None) -> int:
    """Until Ctrl-C, `duration` seconds, or one of `processes` exits (1, named on stderr)."""
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while deadline is None or time.monotonic() < deadline:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    return 0


def duration_argument(parser: argparse.ArgumentParser, text: str | None) -> float | None:
    """`--for` as seconds; a usage error naming it when it is not a Go-style duration."""
    try:
        return parse_duration(text) if text else None
    except ValueError as error:
        parser.error(f"--for: {error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testinfra.cluster",
        description=f"Run kube-apiserver {KUBERNETES_VERSION} + etcd {ETCD_VERSION} on loopback "
        "until Ctrl-C (binaries are built and cached on first use).",
    )
    parser.add_argument("--for", dest="duration", help="stop after this long, e.g. 10m")
    parser.add_argument("--workdir", type=Path, help="keep data, certificates and logs here")
    args = parser.parse_args(argv)
    duration = duration_argument(parser, args.duration)
    stop_on_signals()
    started = time.monotonic()
    with running_cluster(args.workdir) as cluster:
        print(f"kube-apiserver ready at {cluster.server_url} in {time.monotonic() - started:.1f}s")
        print(f"kubeconfig: {cluster.kubeconfig}")
        print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)
        return run_while_alive(cluster.processes, duration)


if __name__ == "__main__":
    sys.exit(main())
