"""`oomdump` / `kubectl oomdump`: the operator's CLI (DESIGN.md, Entry points)."""

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from oomdump import __version__
from oomdump.cli import analysis, fetching, listing
from oomdump.cli.errors import INTERRUPTED, OK, USAGE, CliError
from oomdump.cli.parser import build
from oomdump.cli.podspool import PodSpoolStore, parse_reference
from oomdump.cli.resolve import resolve
from oomdump.cli.stores import LocalStore, S3Store, Store


def _prog() -> str:
    name = Path(sys.argv[0]).name
    return "kubectl oomdump" if name.startswith("kubectl-") else "oomdump"


def _store(args: argparse.Namespace) -> Store | None:
    bucket, prefix = args.bucket, args.prefix
    if sum(1 for where in (bucket, args.dir, args.in_pod) if where) > 1:
        raise CliError(USAGE, "give one of --bucket, --dir or --in-pod")
    if args.in_pod:
        namespace, pod = parse_reference(args.in_pod)
        return PodSpoolStore(namespace, pod, args.kubeconfig, args.context)
    if bucket and bucket.startswith("s3://"):
        bucket, _, in_url = bucket.removeprefix("s3://").partition("/")
        if in_url and prefix is not None and prefix != in_url:
            raise CliError(USAGE, f"--prefix {prefix!r} contradicts --bucket s3://{args.bucket}")
        prefix = prefix if prefix is not None else (in_url or None)
        args.prefix = prefix
    if not bucket and not args.dir:
        return None
    if bucket is not None and not bucket:
        raise CliError(USAGE, "--bucket is empty")
    if args.dir:
        return LocalStore(Path(args.dir), prefix or "")
    return S3Store(bucket, prefix or "", args.endpoint_url, args.region)


def _need(store: Store | None) -> Store:
    if store is None:
        raise CliError(
            USAGE, "where are the dumps? give --bucket NAME, --dir PATH or --in-pod NAMESPACE/POD"
        )
    return store


def _list(args: argparse.Namespace, store: Store | None) -> None:
    if args.pod_name and args.pod and args.pod_name != args.pod:
        raise CliError(USAGE, f"POD {args.pod_name!r} and --pod {args.pod!r} differ")
    pod = args.pod_name or args.pod
    if store is None and pod and args.namespace:
        # No bucket: the dumps are in that pod's spool.
        store = PodSpoolStore(args.namespace, pod, args.kubeconfig, args.context)
    where = _need(store)
    since = timedelta(seconds=args.since) if args.since is not None else None
    under = listing.narrowing(where, args.namespace, pod, exact_prefix=args.prefix is not None)
    records, total = listing.collect(where, under, args.namespace, pod, since, args.limit)
    for record in records:
        listing.enrich(where, record, args.top)
    listing.show(where, records, total, args.output)


def run(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.command == "list":
        _list(args, store)
    elif args.command == "get":
        fetching.get(resolve(args.dump, store), store, args.output, args.metadata, args.force)
    elif args.command == "top":
        dump = resolve(args.dump, store)
        analysis.top(dump, args.sample_index, args.count, args.cum, args.output)
    elif args.command == "diff":
        before, after = resolve(args.before, store), resolve(args.after, store)
        analysis.diff(before, after, args.sample_index, args.count, args.output)
    elif args.command == "open":
        dump = resolve(args.dump, store)
        return fetching.open_(dump, args.go, args.top, args.sample_index, args.pprof_args)
    return OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build(_prog())
    args = parser.parse_args(argv)
    if args.version:
        print(__version__)
        return OK
    if args.group is None:
        parser.print_help(sys.stderr)
        return USAGE
    try:
        return run(args)
    except CliError as error:
        print(f"{parser.prog}: {error.message}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # `oomdump dumps list | head`: the reader left; say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return OK
