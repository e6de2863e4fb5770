"""Time and peak memory of profile.check and heapprofile.read: a real demo profile, Go-shaped
synthetic profiles of 1 and 20 MiB inflated, and one with every table at its cap.

    .venv/bin/python bench/profile_read.py [--repeat 3]

Each case runs in a fresh interpreter, so the growth of its peak resident size (VmHWM,
which unlike ru_maxrss does not inherit the parent's peak through fork and exec) is that
case's alone; `py peak` is tracemalloc's peak of Python allocations in a
separate run (tracemalloc slows the code down, so times come from runs without it).
"""

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testinfra.protobuf import message, number, varint  # noqa: E402

MEASURE = """
import json, sys, time, tracemalloc
def peak():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
sys.path.insert(0, sys.argv[1])
from sidecar import heapprofile, profile
data = open(sys.argv[2], "rb").read()
limits = heapprofile.Limits(seconds=float(sys.argv[4]))
work = {"check": lambda: profile.check(data), "read": lambda: heapprofile.read(data, limits)}
run = work[sys.argv[3]]
before = peak()
times, outcome = [], "ok"
for _ in range(int(sys.argv[5])):
    started = time.perf_counter()
    try:
        run()
    except (profile.NotAProfile, heapprofile.ProfileError) as error:
        outcome = str(error)
    times.append(time.perf_counter() - started)
grown = peak() - before
tracemalloc.start()
try:
    run()
except (profile.NotAProfile, heapprofile.ProfileError):
    pass
py_peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"seconds": min(times), "rss_kib": grown, "py_peak": py_peak, "outcome": outcome}))
"""


def synthetic(samples: int, depth: int, locations: int, functions: int) -> bytes:
    """A Go-shaped heap profile: four sample types, `samples` stacks of `depth` frames over
    `locations` locations, each with one line of one of `functions` functions named like Go
    functions (40-odd bytes, in one of 64 files)."""
    texts = ["", "alloc_objects", "count", "alloc_space", "bytes", "inuse_objects", "inuse_space"]
    head = b"".join(
        message(1, number(1, texts.index(kind)) + number(2, texts.index(unit)))
        for kind, unit in [
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
        ]
    )
    body = [head]
    for index in range(samples):
        stack = [(index * 7919 + level * 104729) % locations + 1 for level in range(depth)]
        values = [3, 3 * 4096, 1, 4096 + index % 512]
        packed = b"".join(map(varint, stack))
        body.append(message(2, message(1, packed) + message(2, b"".join(map(varint, values)))))
    first_name = len(texts)
    files = [f"github.com/example/service/internal/pkg{i}/file.go" for i in range(64)]
    for ident in range(1, locations + 1):
        line = number(1, (ident - 1) % functions + 1) + number(2, ident % 900 + 1)
        body.append(message(4, number(1, ident) + number(3, 0x400000 + ident) + message(4, line)))
    for ident in range(1, functions + 1):
        name = first_name + ident - 1
        fields = number(1, ident) + number(2, name) + number(3, name)
        body.append(message(5, fields + number(4, first_name + functions + ident % 64)))
    names = [f"github.com/example/service/internal.(*Type{i}).Method" for i in range(functions)]
    body.extend(message(6, text.encode()) for text in texts + names + files)
    return gzip.compress(b"".join(body), 6)


def demo_profile() -> bytes:
    from testinfra.gobuild import build_local

    binary = build_local("go-memory-leak", REPO / "examples" / "go-memory-leak")
    command = [
        str(binary),
        "-port",
        "0",
        "-mode",
        "gradual",
        "-step",
        str(1 << 20),
        "-interval",
        "20ms",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().rsplit(":", 1)[1])
        for line in process.stdout:
            if line.startswith("cycle 20:"):
                break
        url = f"http://127.0.0.1:{port}/debug/pprof/heap?gc=1"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.read()
    finally:
        process.kill()
        process.wait(timeout=10)


def measure(path: Path, work: str, repeat: int, seconds: float) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(REPO), str(path), work, str(seconds), str(repeat)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from sidecar.heapprofile import DEFAULT

    cases = {
        "demo (real)": demo_profile(),
        "1 MiB synthetic": synthetic(samples=8_000, depth=24, locations=20_000, functions=8_000),
        "20 MiB synthetic": synthetic(
            samples=170_000, depth=24, locations=60_000, functions=20_000
        ),
        "tables at caps": synthetic(
            samples=20_000, depth=32, locations=DEFAULT.locations, functions=DEFAULT.functions
        ),
    }
    print(
        f"{'case':18} {'gzip':>9} {'inflated':>9}  {'work':5} {'seconds':>8} "
        f"{'rss+ MiB':>8} {'py peak MiB':>11}  outcome"
    )
    with tempfile.TemporaryDirectory() as folder:
        for name, data in cases.items():
            path = Path(folder) / "profile.pb.gz"
            path.write_bytes(data)
            inflated = len(gzip.decompress(data))
            for work in ("check", "read"):
                # The default deadline (5 s) and one without it, to show the full cost.
                for seconds in (DEFAULT.seconds,) if work == "check" else (DEFAULT.seconds, 600):
                    figures = measure(path, work, args.repeat, seconds)
                    label = work if seconds == DEFAULT.seconds else f"{work}*"
                    print(
                        f"{name:18} {len(data) / 1024:8.0f}K {inflated / 2**20:8.2f}M  "
                        f"{label:5} {figures['seconds']:8.3f} "
                        f"{int(figures['rss_kib']) / 1024:8.1f} "  # type: ignore[call-overload]
                        f"{int(figures['py_peak']) / 2**20:11.1f}  "  # type: ignore[call-overload]
                        f"{str(figures['outcome'])[:60]}"
                    )
    print("read* = read without the deadline (600 s), to show the full cost at that size")


if __name__ == "__main__":
    main()
