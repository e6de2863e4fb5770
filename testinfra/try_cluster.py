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
import sys
import tempfile
import time
from pathlib import Path

from testinfra.cluster import duration_argument, run_while_alive, running_cluster, stop_on_signals
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
        return run_while_alive({**cluster.processes, **node.processes}, duration)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testinfra.try_cluster", description=__doc__)
    parser.add_argument("--for", dest="duration", help="stop after this long, e.g. 10m")
    parser.add_argument("--workdir", type=Path, help="keep data, certificates and logs here")
    parser.add_argument(
        "--no-example", action="store_true", help="do not start deploy/examples' leak"
    )
    args = parser.parse_args(argv)
    duration = duration_argument(parser, args.duration)
    stop_on_signals()
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
