"""`make e2e-cluster`: a real one-node cluster with oomdump installed, to try it by hand.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, a kubelet with containerd,
kube-proxy and CoreDNS (testinfra.node), MinIO for the dumps, `deploy/` applied as the
README says with the images built from this repository, and (unless --no-example) the
example leak of `deploy/examples` running in its opted-in namespace. It prints how to reach
it and runs until Ctrl-C (or --for), then removes everything it made. Root, Linux, cgroup
v1 with containerd 1.6 (the first run builds and caches the binaries and images: see
CONTRIBUTING.md, Tests).
"""

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from oomdump.durations import parse_duration
from testinfra.cluster import running_cluster
from testinfra.minio import running_minio
from testinfra.node import running_node
from testinfra.node_deploy import (
    EXAMPLE_BUCKET,
    EXAMPLE_NAMESPACE,
    NodePreparationError,
    install,
    install_example,
    prepare,
)


def _say(text: str) -> None:
    print(text, flush=True)


def _wait(duration: float | None, processes: dict) -> int:
    deadline = None if duration is None else time.monotonic() + duration
    while deadline is None or time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                print(f"{name} exited with {process.returncode}; stopping", file=sys.stderr)
                return 1
        time.sleep(0.5)
    return 0


def run(workdir: Path, duration: float | None, example: bool) -> int:
    started = time.monotonic()
    _say("preparing binaries and images (cached after the first run)...")
    archives = prepare()
    with (
        running_cluster(workdir / "cluster", for_nodes=True) as cluster,
        running_node(cluster, workdir / "node", archives) as node,
        running_minio(workdir / "minio") as minio,
    ):
        node.network.publish(node.network.gateway, minio.port, minio.port)
        api = cluster.api_client()
        install(api, workdir, f"http://{node.network.gateway}:{minio.port}")
        if example:
            minio.make_bucket(EXAMPLE_BUCKET)
            install_example(api, workdir, minio.access_key, minio.secret_key)
        _say(f"ready in {time.monotonic() - started:.0f}s: node {node.name}, oomdump installed")
        _say(f"export KUBECONFIG={cluster.kubeconfig}")
        _say(
            f"export AWS_ACCESS_KEY_ID={minio.access_key} "
            f"AWS_SECRET_ACCESS_KEY={minio.secret_key} AWS_REGION=us-east-1"
        )
        if example:
            _say(f"kubectl -n {EXAMPLE_NAMESPACE} get pods -w   # the leak is OOM-killed in ~30s")
            _say(f"kubectl -n {EXAMPLE_NAMESPACE} describe pod   # the HeapProfileCaptured Event")
        _say(
            f".venv/bin/oomdump dumps list --bucket {EXAMPLE_BUCKET} "
            f"--endpoint-url {minio.endpoint_url}"
        )
        _say("Ctrl-C stops the cluster and removes what it made.")
        processes = {**cluster.processes, **node.processes}
        try:
            return _wait(duration, processes)
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
            return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testinfra.try_cluster", description=__doc__)
    parser.add_argument("--for", dest="duration", help="stop after this long, e.g. 10m")
    parser.add_argument("--workdir", type=Path, help="keep data, certificates and logs here")
    parser.add_argument(
        "--no-example", action="store_true", help="do not start deploy/examples' leak"
    )
    args = parser.parse_args(argv)
    try:
        duration = parse_duration(args.duration) if args.duration else None
    except ValueError as error:
        parser.error(f"--for: {error}")
    # SIGTERM stops as Ctrl-C does, so everything made is removed; SIGINT is set explicitly
    # because a shell starting us in the background leaves it ignored.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            return run(args.workdir, duration, not args.no_example)
        with tempfile.TemporaryDirectory(prefix="oomdump-e2e-") as folder:
            return run(Path(folder), duration, not args.no_example)
    except NodePreparationError as error:
        print(f"cannot prepare the node: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
