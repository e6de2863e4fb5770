"""The notice a watcher sends, read as hostile input, and the Event text it becomes."""

import json
import re

import pytest

from sidecar.notify import CAPTURED, FAILED
from sidecar.notify import Notice as SentNotice
from webhook import notice as notices
from webhook.notice import BadNotice, container_of, event_name, message, parse, quantity
from webhook.ratelimit import RateLimiter

CONTAINER_ID = "4f" * 32
OTHER_ID = "a1" * 32
TOP = (
    {
        "name": "main.retainInvoiceBatch",
        "flat_bytes": 181 * 2**20,
        "cum_bytes": 181 * 2**20,
        "flat_share": 0.94,
        "cum_share": 0.94,
    },
)


def sent(**changes) -> dict:
    """A body exactly as the watcher's client (sidecar.notify) writes it."""
    fields = {
        "reason": CAPTURED,
        "pid": 7,
        "comm": "leaky",
        "cgroup": f"/kubepods/burstable/pod1234/{CONTAINER_ID}",
        "usage": 236 * 2**20,
        "limit": 256 * 2**20,
        "percent": 92.2,
        "location": "s3://dumps/shop/app/2026-01-01T00-00-00.000Z-leaky-7-6060.pb.gz",
        "detail": "",
        "top": TOP,
    }
    fields.update(changes)
    return json.loads(SentNotice(**fields).body("app", "shop"))


def encoded(document: object) -> bytes:
    return json.dumps(document).encode()


def test_the_watchers_own_body_is_read_field_for_field() -> None:
    notice = parse(encoded(sent()))
    assert (notice.reason, notice.pod, notice.namespace, notice.pid) == (CAPTURED, "app", "shop", 7)
    assert notice.limit == 256 * 2**20 and notice.percent == 92.2
    assert notice.top[0].name == "main.retainInvoiceBatch"
    assert notice.location_kind == "s3" and notice.event_type == "Normal"
    failed = parse(encoded(sent(reason=FAILED, location="", detail="no-port", top=())))
    assert failed.event_type == "Warning" and failed.location_kind == "none"


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b"[" * 100_000, "not JSON"),
        (encoded({**sent(), "reason": "Killing"}), "reason must be one of"),
        (encoded({**sent(), "pid": True}), "pid must be an integer"),
        (encoded({**sent(), "pid": "7"}), "pid must be an integer"),
        (encoded({**sent(), "pid": 0}), "pid must be from 1"),
        (encoded({**sent(), "pid": 2**40}), "pid must be from 1"),
        (encoded({**sent(), "pid": 2**70}), "pid must be"),
        (encoded({**sent(), "usage": -1}), "usage must be from 0"),
        (encoded({**sent(), "pod": ""}), "pod must not be empty"),
        (encoded({**sent(), "pod": "p" * 254}), "pod is longer than 253"),
        (encoded({**sent(), "namespace": None}), "namespace must be a string, not missing"),
        (encoded({**sent(), "comm": ["x"]}), "comm must be a string, not list"),
        (encoded({**sent(), "cgroup": "/" * 5000}), "cgroup is longer than 4096"),
        (encoded({**sent(), "percent": "92"}), "percent must be a number"),
        (b'{"percent": NaN}', "not JSON"),
        (encoded({**sent(), "percent": 1e300}), "percent must be from 0"),
        (encoded({**sent(), "location": "http://x/y"}), "location must be an s3:// URL"),
        (encoded({**sent(), "location": "relative/path"}), "location must be an s3:// URL"),
        (encoded({**sent(), "top": {"name": "x"}}), "top must be a list"),
        (encoded({**sent(), "top": [TOP[0]] * 17}), "top must be a list of at most 16"),
        (encoded({**sent(), "top": ["main.leak"]}), "top[0] must be an object"),
        (encoded({**sent(), "top": [{**TOP[0], "flat_share": 2}]}), "top[0].flat_share"),
        (encoded({**sent(), "top": [{**TOP[0], "name": ""}]}), "name must not be empty"),
        (encoded({**sent(), "detail": "x" * 1025}), "detail is longer than 1024"),
        (encoded({**sent(), "id": "x"}), "id must be 32 lowercase hex digits"),
        (encoded({**sent(), "id": ""}), "id must be 32 lowercase hex digits"),
        (encoded({**sent(), "id": "AB" * 16}), "id must be 32 lowercase hex digits"),
        (encoded({**sent(), "id": "0" * 33}), "id must be 32 lowercase hex digits"),
        (
            encoded({**sent(), "id": 7}),
            "id must be 32 lowercase hex digits (128 random bits), not int",
        ),
    ],
)
def test_hostile_bodies_are_refused_naming_the_field(body: bytes, names: str) -> None:
    with pytest.raises(BadNotice, match=re.escape(names)):
        parse(body)


def test_a_refused_reason_is_quoted_printable() -> None:
    with pytest.raises(BadNotice) as refused:
        parse(encoded({**sent(), "reason": "x\n\x1b[2J"}))
    assert "\n" not in str(refused.value) and "\x1b" not in str(refused.value)


STATUSES = [
    {"name": "app", "containerID": f"containerd://{CONTAINER_ID}"},
    {"name": "oomdump-sidecar", "containerID": f"containerd://{OTHER_ID}"},
]


@pytest.mark.parametrize(
    "cgroup",
    [
        f"/kubepods/burstable/pod1234/{CONTAINER_ID}",  # cgroupfs driver
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice/"
        f"cri-containerd-{CONTAINER_ID}.scope",  # systemd driver
        f"/../cri-containerd-{CONTAINER_ID}.scope",  # seen from another cgroup namespace
        f"/sys/fs/cgroup/memory/kubepods/pod1234/{CONTAINER_ID}",
        f"/system.slice/docker-{CONTAINER_ID.upper()}.scope",
    ],
)
def test_the_container_is_named_from_the_cgroup_path(cgroup: str) -> None:
    assert container_of(cgroup, STATUSES) == "app"


def test_an_unknown_or_missing_id_names_no_container() -> None:
    assert container_of(f"/kubepods/pod1/{'0' * 64}", STATUSES) is None
    assert container_of("/", STATUSES) is None
    assert container_of(f"/kubepods/pod1/{CONTAINER_ID}", []) is None
    assert container_of(f"/x/{CONTAINER_ID}", [{"name": "app", "containerID": None}]) is None


def test_quantities_read_like_kubernetes_memory() -> None:
    assert [quantity(n) for n in (100, 512 * 1024, 256 * 2**20, 3 * 2**29, 2**40)] == [
        "100", "512Ki", "256Mi", "1.5Gi", "1Ti",
    ]  # fmt: skip


def test_the_message_names_container_process_memory_location_and_top() -> None:
    text = message(parse(encoded(sent())), "app")
    assert text == (
        "Heap profile of container app, process leaky (pid 7) at 92% of 256Mi saved to "
        "s3://dumps/shop/app/2026-01-01T00-00-00.000Z-leaky-7-6060.pb.gz; "
        "top: main.retainInvoiceBatch 181Mi (94%)"
    )


def test_without_a_container_the_process_is_named() -> None:
    local = sent(location="/tmp/oomdump/shop/app/x.pb.gz", top=(), percent=None)
    text = message(parse(encoded(local)), None)
    assert text == (
        "Heap profile of process leaky (pid 7) at 92% of 256Mi saved to "
        "/tmp/oomdump/shop/app/x.pb.gz"
    )


def test_a_failure_says_why_and_where_the_dump_waits() -> None:
    failed = sent(reason=FAILED, location="/tmp/oomdump/a.pb.gz", detail="upload-failed: 503")
    assert message(parse(encoded(failed)), "app") == (
        "Heap profile of container app, process leaky (pid 7) at 92% of 256Mi failed: "
        "upload-failed: 503; dump at /tmp/oomdump/a.pb.gz; top: main.retainInvoiceBatch 181Mi (94%)"
    )


def test_control_characters_from_the_app_never_reach_the_terminal() -> None:
    hostile = sent(comm="x\x1b]0;pwned\x07\n", top=({**TOP[0], "name": "main.\x1b[2Jleak"},))
    text = message(parse(encoded(hostile)), None)
    assert text.isprintable()
    assert "process x\\x1b]0;pwned\\x07\\n (pid 7)" in text and "main.\\x1b[2Jleak" in text


def test_the_message_is_bounded() -> None:
    long = sent(reason=FAILED, detail="\x01" * 1024, location="/" + "d" * 2047)
    text = message(parse(encoded(long)), None)
    assert len(text) == notices.MAX_MESSAGE and text.endswith("...")


def test_event_names_aggregate_by_pod_reason_container_and_location_kind() -> None:
    base = parse(encoded(sent()))
    again = parse(encoded(sent(pid=9, percent=97.0, location="s3://dumps/other.pb.gz")))
    local = parse(encoded(sent(location="/tmp/oomdump/x.pb.gz")))
    failed = parse(encoded(sent(reason=FAILED)))
    name = event_name("app", "uid-1", base, "app")
    assert event_name("app", "uid-1", again, "app") == name
    assert len({
        name,
        event_name("app", "uid-1", local, "app"),
        event_name("app", "uid-1", failed, "app"),
        event_name("app", "uid-2", base, "app"),  # the pod recreated under the same name
        event_name("app", "uid-1", base, "worker"),
        event_name("app", "uid-1", base, None),
    }) == 6  # fmt: skip


def test_event_names_are_valid_for_the_longest_pod_names() -> None:
    notice = parse(encoded(sent()))
    for pod in ("a" * 253, "a" * 199 + "-b" * 27, "x.y"):
        name = event_name(pod, "uid", notice, "app")
        assert len(name) <= 253
        assert re.fullmatch(
            r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name
        )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_pod_has_its_own_bucket_refilled_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(burst=3, per_minute=6, clock=clock)  # one token every 10 s
    assert [limiter.allow("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.allow("a") == pytest.approx(10.0)
    assert limiter.allow("b") == 0.0  # another pod is not slowed by the first
    clock.now += 5
    assert limiter.allow("a") == pytest.approx(5.0)
    clock.now += 5
    assert limiter.allow("a") == 0.0
    clock.now += 3600
    assert [limiter.allow("a") for _ in range(4)][-1] > 0  # refilled to the burst, no more


def test_the_buckets_are_bounded() -> None:
    limiter = RateLimiter(burst=1, per_minute=1, max_keys=2, clock=Clock())
    for key in ("a", "b", "c"):
        limiter.allow(key)
    assert limiter.allow("a") == 0.0  # forgotten (least recently used), so full again
    assert limiter.allow("c") > 0
