"""culprit.Reader, the watcher's reading thread: one read at a time in the order they came,
a bounded queue (what does not fit is handed on unread at once), a stop that hands on what
it has no time to read, a crash that leaves the others read, and the quick GIL hand-over
only while reading. The jobs are real closures on real threads."""

import sys
import threading
import time

import pytest

from sidecar import culprit
from testinfra.waiting import wait_for


class Jobs:
    """Jobs that note when they ran, and why one was handed on unread."""

    def __init__(self) -> None:
        self.ran: list[tuple[int, float, float]] = []  # (job, started, ended)
        self.unread: list[tuple[int, str]] = []
        self.switch_intervals: list[float] = []
        self.lock = threading.Lock()

    def submit(
        self, reader: culprit.Reader, index: int, hold: threading.Event | None = None
    ) -> None:
        def read() -> None:
            started = time.monotonic()
            self.switch_intervals.append(sys.getswitchinterval())
            if hold is not None:
                assert hold.wait(10), "the test never let the job go"
            busy_until = time.monotonic() + 0.01
            while time.monotonic() < busy_until:  # pure Python, as a profile read is
                pass
            with self.lock:
                self.ran.append((index, started, time.monotonic()))

        def hand_on(reason: str) -> None:
            with self.lock:
                self.unread.append((index, reason))

        reader.submit(read, hand_on)


@pytest.fixture
def jobs() -> Jobs:
    return Jobs()


def test_reads_run_one_at_a_time_in_order_then_the_thread_ends(jobs: Jobs) -> None:
    reader = culprit.Reader()
    before = sys.getswitchinterval()
    senders = [threading.Thread(target=jobs.submit, args=(reader, i)) for i in range(6)]
    for sender in senders:  # submitted from several threads, as captures do
        sender.start()
        sender.join()
    wait_for(lambda: len(jobs.ran) == 6 and not reader.running, "every read, then no thread")
    assert [index for index, _, _ in jobs.ran] == list(range(6))
    for (_, _, ended), (_, started, _) in zip(jobs.ran, jobs.ran[1:], strict=False):
        assert ended <= started  # never two at once
    assert jobs.switch_intervals == [culprit.READ_SWITCH_INTERVAL] * 6
    assert sys.getswitchinterval() == before and jobs.unread == []
    jobs.submit(reader, 6)  # a later read starts a thread again
    wait_for(lambda: len(jobs.ran) == 7 and not reader.running, "the later read")


def test_past_max_waiting_a_capture_is_handed_on_unread_at_once(jobs: Jobs) -> None:
    reader = culprit.Reader(max_waiting=3)
    hold = threading.Event()
    jobs.submit(reader, 0, hold)
    wait_for(lambda: reader.waiting() == 0, "the first read to start")
    for index in (1, 2, 3):
        jobs.submit(reader, index)
    jobs.submit(reader, 4)  # the queue holds 3: this one is not kept
    assert jobs.unread == [(4, "not-read: 3 captures were waiting to be read")]
    hold.set()
    wait_for(lambda: len(jobs.ran) == 4 and not reader.running, "the kept reads")
    assert [index for index, _, _ in jobs.ran] == [0, 1, 2, 3]


def test_finish_reads_until_its_deadline_and_hands_on_the_rest(jobs: Jobs) -> None:
    reader = culprit.Reader()
    hold = threading.Event()
    jobs.submit(reader, 0, hold)
    wait_for(lambda: reader.waiting() == 0, "the first read to start")
    for index in (1, 2, 3):
        jobs.submit(reader, index)
    finisher = threading.Thread(target=reader.finish, args=(time.monotonic(),))
    finisher.start()
    wait_for(lambda: reader.read_until < float("inf"), "finish to set its deadline")
    hold.set()  # the read in progress ends; the deadline has passed for the others
    finisher.join(10)
    assert not finisher.is_alive() and not reader.running
    assert [index for index, _, _ in jobs.ran] == [0]
    assert jobs.unread == [(i, "not-read: the watcher was stopping") for i in (1, 2, 3)]
    jobs.submit(reader, 4)  # after finish, reads are read again (the next run)
    wait_for(lambda: [i for i, _, _ in jobs.ran] == [0, 4], "a read after finish")


def test_a_read_that_crashes_leaves_the_others_read(jobs: Jobs, logs) -> None:
    reader = culprit.Reader()
    before = sys.getswitchinterval()

    def crash() -> None:
        raise RuntimeError("a bug in reading")

    reader.submit(crash, lambda reason: None)
    jobs.submit(reader, 1)
    wait_for(lambda: len(jobs.ran) == 1 and not reader.running, "the read after the crash")
    assert logs.matching("event=reader-crashed", "a bug in reading")
    assert sys.getswitchinterval() == before


def test_readers_of_two_watchers_share_the_switch_interval(jobs: Jobs) -> None:
    """Two readers at once (two watchers in one process): the interval stays quick while
    either reads and comes back once both are done."""
    before = sys.getswitchinterval()
    first, second = culprit.Reader(), culprit.Reader()
    hold_first, hold_second = threading.Event(), threading.Event()
    jobs.submit(first, 0, hold_first)
    jobs.submit(second, 1, hold_second)
    wait_for(lambda: len(jobs.switch_intervals) == 2, "both reads to start")
    hold_first.set()
    wait_for(lambda: not first.running, "the first reader's end")
    assert sys.getswitchinterval() == culprit.READ_SWITCH_INTERVAL  # the second still reads
    hold_second.set()
    wait_for(lambda: not second.running, "the second reader's end")
    assert sys.getswitchinterval() == before
