"""Notice ids: made once per notice by the watcher, remembered by the webhook for a while
(bounded by count and age, on an injected clock), and kept on the Event itself.

The behaviour against a real API server (repeats, races, the other replica, a lost
answer to the real client) is in tests/e2e/test_events.py."""

import json
import re
from concurrent.futures import Future

import pytest

from sidecar.notify import CAPTURED
from sidecar.notify import Notice as SentNotice
from webhook import kubeapi
from webhook.notice import parse
from webhook.recent import MAX_AGE, MAX_IDS, Applied, RecentNotices

ID = "0123456789abcdef" * 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def notice() -> SentNotice:
    return SentNotice(CAPTURED, 7, "leaky", "/", 1, 2, 50.0, "s3://b/k")


def test_each_notice_has_its_own_id_and_keeps_it_in_every_body() -> None:
    one, other = notice(), notice()
    assert re.fullmatch(r"[0-9a-f]{32}", one.id) and one.id != other.id
    bodies = [json.loads(one.body("app", "shop")) for _ in range(3)]  # one per attempt
    assert {body["id"] for body in bodies} == {one.id}
    assert parse(one.body("app", "shop")).id == one.id


def test_a_body_without_an_id_or_with_null_has_none() -> None:
    document = json.loads(notice().body("app", "shop"))
    del document["id"]
    assert parse(json.dumps(document).encode()).id is None
    assert parse(json.dumps({**document, "id": None}).encode()).id is None


def test_an_applied_id_answers_its_repeats_for_the_same_pod_only() -> None:
    recent = RecentNotices(clock=Clock())
    assert recent.claim("uid-a", ID) is None  # the caller's claim
    recent.applied("uid-a", ID, Applied("app.oomdump.1", 3))
    assert recent.claim("uid-a", ID) == Applied("app.oomdump.1", 3)
    assert recent.claim("uid-b", ID) is None  # another pod's notice of the same id


def test_a_claim_in_flight_makes_a_repeat_wait_and_a_failure_lets_it_apply() -> None:
    recent = RecentNotices(clock=Clock())
    assert recent.claim("uid", ID) is None
    waiting = recent.claim("uid", ID)
    assert isinstance(waiting, Future) and not waiting.done()
    assert recent.claim("uid", ID) is waiting  # every repeat waits on the same claim
    recent.release("uid", ID)  # the first one failed
    assert waiting.done()
    assert recent.claim("uid", ID) is None  # so the repeat applies it
    waiting = recent.claim("uid", ID)
    assert isinstance(waiting, Future)
    recent.applied("uid", ID, Applied("e", 1))
    assert waiting.done() and recent.claim("uid", ID) == Applied("e", 1)


def test_ids_are_forgotten_at_their_age() -> None:
    clock = Clock()
    recent = RecentNotices(max_age=60.0, clock=clock)
    recent.claim("uid", ID)
    recent.applied("uid", ID, Applied("e", 1))
    clock.now += 30
    recent.claim("uid", "f" * 32)
    recent.applied("uid", "f" * 32, Applied("e", 2))
    clock.now += 29.9
    assert recent.claim("uid", ID) == Applied("e", 1) and len(recent) == 2
    clock.now += 0.1  # 60 s after the first
    assert len(recent) == 1 and recent.claim("uid", ID) is None
    assert recent.claim("uid", "f" * 32) == Applied("e", 2)


def test_ids_are_bounded_overall_the_oldest_going_first() -> None:
    clock = Clock()
    recent = RecentNotices(max_ids=3, clock=clock)
    ids = [f"{n:032x}" for n in range(5)]
    for number, notice_id in enumerate(ids):
        clock.now += 1
        assert recent.claim(f"uid-{number % 2}", notice_id) is None
        recent.applied(f"uid-{number % 2}", notice_id, Applied("e", number))
    assert len(recent) == 3
    remembered = [recent.claim(f"uid-{n % 2}", ids[n]) for n in (2, 3, 4)]
    assert remembered == [Applied("e", 2), Applied("e", 3), Applied("e", 4)]
    assert recent.claim("uid-0", ids[0]) is None  # forgotten: the oldest


def test_the_default_bounds_hold_under_many_pods() -> None:
    clock = Clock()
    recent = RecentNotices(clock=clock)
    for number in range(MAX_IDS + 500):
        recent.claim(f"uid-{number}", ID)
        recent.applied(f"uid-{number}", ID, Applied("e", 1))
    assert len(recent) == MAX_IDS
    clock.now += MAX_AGE
    assert len(recent) == 0


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_ids"):
        RecentNotices(max_ids=0)
    with pytest.raises(ValueError, match="max_age"):
        RecentNotices(max_age=0)


def test_the_event_ids_are_read_from_the_answered_event() -> None:
    annotated = {"count": 4, "metadata": {"annotations": {kubeapi.NOTICE_IDS: f"{ID},{'e' * 32}"}}}
    assert kubeapi._counted("n", annotated) == kubeapi.Counted("n", 4, (ID, "e" * 32))
    other = {"count": 2, "metadata": {"annotations": {"team": "x"}}}
    assert kubeapi._counted("n", other) == kubeapi.Counted("n", 2, ())
    assert kubeapi._counted("n", {"metadata": {}}) == kubeapi.Counted("n", 1, None)


def test_the_patch_adds_the_id_and_keeps_the_newest_ones() -> None:
    assert kubeapi._ids_operation(None, ID) == {
        "op": "add", "path": "/metadata/annotations", "value": {kubeapi.NOTICE_IDS: ID},
    }  # fmt: skip
    operation = kubeapi._ids_operation((), ID)
    assert operation == {
        "op": "add", "path": "/metadata/annotations/oomdump.io~1notice-ids", "value": ID,
    }  # fmt: skip
    older = tuple(f"{n:032x}" for n in range(kubeapi.IDS_KEPT))
    kept = kubeapi._ids_operation(older, ID)["value"].split(",")
    assert kept == [*older[1:], ID] and len(kept) == kubeapi.IDS_KEPT
