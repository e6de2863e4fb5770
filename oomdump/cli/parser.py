"""The command line: `oomdump dumps list|get|top|diff|open`, each with its own --help."""

import argparse
import os

from oomdump.cli.errors import EXIT_CODES_HELP
from oomdump.cli.profiles import SAMPLE_INDEXES
from oomdump.durations import parse_duration

WHERE_HELP = """stores (give one):
  --bucket NAME  an S3 bucket, read with the standard AWS credential chain (AWS_ACCESS_KEY_ID,
                 AWS_PROFILE, web identity, instance metadata); s3://NAME/PREFIX/ sets --prefix
  --dir PATH     a local folder laid out as the watcher's DUMP_DIR (e.g. copied off a node)
Defaults come from OOMDUMP_BUCKET, OOMDUMP_PREFIX, OOMDUMP_ENDPOINT_URL and OOMDUMP_DIR.

A DUMP is a local file (as `dumps get` saves it), a key that `dumps list` shows, or a part of
one that names a single dump: its start (e.g. NAMESPACE/POD/2025-06-01T10) or its end (e.g.
the file name)."""


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _count(minimum: int) -> "type[int] | object":
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    return parse


def _where() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("where dumps are")
    group.add_argument(
        "--bucket", default=_env("OOMDUMP_BUCKET"), help="S3 bucket [OOMDUMP_BUCKET]"
    )
    group.add_argument(
        "--prefix",
        default=_env("OOMDUMP_PREFIX"),
        help="the watcher's S3_PREFIX; unset = any prefix [OOMDUMP_PREFIX]",
    )
    group.add_argument(
        "--endpoint-url",
        default=_env("OOMDUMP_ENDPOINT_URL"),
        help="an S3-compatible store (MinIO, R2, ...) [OOMDUMP_ENDPOINT_URL]",
    )
    group.add_argument("--region", default=None, help="the bucket's region [AWS_REGION]")
    group.add_argument(
        "--dir", default=_env("OOMDUMP_DIR"), help="a local DUMP_DIR folder [OOMDUMP_DIR]"
    )
    group.add_argument(
        "--in-pod",
        metavar="NAMESPACE/POD",
        default=None,
        help="a pod's spool, read through the Kubernetes API (exec into its oomdump-sidecar "
        "container; needs pods/exec); `list -n NS POD` with no --bucket or --dir does this",
    )
    group.add_argument("--kubeconfig", default=None, help="for --in-pod [KUBECONFIG]")
    group.add_argument("--context", default=None, help="for --in-pod: the kubeconfig context")
    return parent


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="table or json"
    )


def _profile_options(parser: argparse.ArgumentParser, count_help: str) -> None:
    parser.add_argument(
        "--sample-index", choices=SAMPLE_INDEXES, default="inuse_space", help="default inuse_space"
    )
    parser.add_argument("-n", "--count", type=_count(1), default=10, help=count_help)


def build(prog: str) -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Find, read and open the heap profiles oomdump captured before OOM kills.",
        epilog=f"{WHERE_HELP}\n\n{EXIT_CODES_HELP}",
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version")
    groups = parser.add_subparsers(dest="group", metavar="dumps")
    dumps = groups.add_parser(
        "dumps",
        help="list, get, read and open dumps",
        epilog=EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    commands = dumps.add_subparsers(dest="command", metavar="COMMAND", required=True)
    where = [_where()]
    epilog = f"{WHERE_HELP}\n\n{EXIT_CODES_HELP}"

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            parents=where,
            help=summary,
            description=summary,
            epilog=epilog,
            formatter_class=formatter,
        )

    listing = command("list", "the dumps, newest first (all namespaces unless -n)")
    listing.add_argument("pod_name", nargs="?", metavar="POD", help="only this pod's dumps")
    listing.add_argument("-n", "--namespace", help="only this namespace's dumps")
    listing.add_argument("--pod", help="only this pod's dumps (the same as POD)")
    listing.add_argument(
        "--since", type=_duration, help="only dumps newer than this Go duration (30m, 2h, 24h)"
    )
    listing.add_argument(
        "--limit", type=_count(0), default=50, help="at most this many (default 50; 0 = all)"
    )
    listing.add_argument(
        "--top",
        action="store_true",
        help="read each profile whose metadata names no top function, to fill TOP",
    )
    _output(listing)

    get = command("get", "download a dump's profile (and with --metadata its .json)")
    get.add_argument("dump", metavar="DUMP")
    get.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="file or folder (default: the key's file name here; - for stdout)",
    )
    get.add_argument("--metadata", action="store_true", help="also save the .json beside it")
    get.add_argument("--force", action="store_true", help="replace existing files")

    top = command("top", "the functions holding the most memory (no Go needed)")
    top.add_argument("dump", metavar="DUMP")
    _profile_options(top, "how many functions (default 10)")
    top.add_argument("--cum", action="store_true", help="sort by cumulative bytes")
    _output(top)

    diff = command("diff", "what grew from dump A to dump B (no Go needed)")
    diff.add_argument("before", metavar="A", help="the earlier dump")
    diff.add_argument("after", metavar="B", help="the later dump")
    _profile_options(diff, "how many functions (default 10)")
    _output(diff)

    opener = command("open", "go tool pprof -http on a dump (needs Go); pprof flags after --")
    opener.add_argument("dump", metavar="DUMP")
    opener.add_argument("pprof_args", nargs="*", metavar="PPROF_FLAG", help="e.g. -- -focus=main")
    opener.add_argument("--top", action="store_true", help="print go tool pprof -top instead")
    opener.add_argument(
        "--sample-index", choices=SAMPLE_INDEXES, default="inuse_space", help="default inuse_space"
    )
    opener.add_argument("--go", default=_env("GO") or "go", help="the go command [GO]")
    return parser
