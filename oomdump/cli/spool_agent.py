"""The far end of `--in-pod`: run inside a pod's oomdump-sidecar container (through the
Kubernetes API's exec, as `kubectl exec` does), it lists or reads that watcher's spool.

    python -m oomdump.cli.spool_agent list          one JSON line per file: {"key", "size"}
    python -m oomdump.cli.spool_agent read KEY MAX  the file's bytes, base64, on one line

It reads DUMP_DIR with the same rules as `--dir` (regular files beneath it, no links, no
half-written temporaries, at most MAX bytes), and fails with the CLI's exit codes, its
message on stderr.
"""

import base64
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from oomdump.cli.errors import USAGE, CliError
from oomdump.cli.stores import LocalStore

USAGE_TEXT = "usage: python -m oomdump.cli.spool_agent list | read KEY MAX_BYTES"


def _spool() -> LocalStore:
    root = os.environ.get("DUMP_DIR")
    if not root:
        raise CliError(USAGE, "DUMP_DIR is not set: this is not an oomdump watcher container")
    return LocalStore(Path(root))


def run(argv: Sequence[str]) -> None:
    if list(argv) == ["list"]:
        for stored in _spool().objects(""):
            print(json.dumps({"key": stored.key, "size": stored.size}))
        return
    if len(argv) == 3 and argv[0] == "read" and argv[2].isdigit():
        data = _spool().read(argv[1], int(argv[2]))
        sys.stdout.write(base64.b64encode(data).decode("ascii") + "\n")
        return
    raise CliError(USAGE, USAGE_TEXT)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        run(sys.argv[1:] if argv is None else argv)
    except CliError as error:
        print(error.message, file=sys.stderr)
        return error.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
