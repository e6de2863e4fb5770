from datetime import UTC, datetime, timedelta

import pytest

from certs.validity import needs_renewal, parse_validity

START = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("365", timedelta(days=365)),
        ("365d", timedelta(days=365)),
        ("1d", timedelta(days=1)),
        ("720h", timedelta(hours=720)),
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(minutes=90)),
    ],
)
def test_validity_accepts_days_and_go_durations(text: str, expected: timedelta) -> None:
    assert parse_validity(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "neither"), ("a year", "neither"), ("-5d", "neither"), ("0", "longer than zero")],
)
def test_validity_refuses_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_validity(text)


@pytest.mark.parametrize(
    ("elapsed_days", "renew"),
    [(0, False), (100, False), (199, False), (201, True), (299, True), (300, True), (400, True)],
)
def test_renewal_starts_when_under_a_third_is_left(elapsed_days: int, renew: bool) -> None:
    # 300 days of validity: a third (100 days) left is reached on day 200.
    not_after = START + timedelta(days=300)
    assert needs_renewal(START, not_after, START + timedelta(days=elapsed_days)) is renew


def test_exactly_a_third_left_is_still_kept() -> None:
    not_after = START + timedelta(days=300)
    assert not needs_renewal(START, not_after, START + timedelta(days=200))
    assert needs_renewal(START, not_after, START + timedelta(days=200, seconds=1))


def test_a_certificate_from_the_future_is_renewed() -> None:
    assert needs_renewal(START, START + timedelta(days=10), START - timedelta(hours=1))
