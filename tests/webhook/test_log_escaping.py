"""A request cannot forge a webhook log line: control characters in logged fields are
escaped, checked on the real server's log after real requests over TLS."""

import logging
import sys

from tests.webhook.helpers import JSON, review, simple_pod, wait_for
from tests.webhook.server import RunningWebhook
from webhook.logs import EscapingFormatter, escape

FORGED = "2026-01-01 00:00:00,000 INFO webhook uid=forged result=injected reason=injected"


def test_a_uid_with_a_newline_stays_on_its_own_line(webhook: RunningWebhook) -> None:
    uid = f"real-uid\n{FORGED}\r\x1b[2K"
    pod = simple_pod({"oomdump.io/inject": "disabled"})  # skips are logged at info level
    with webhook.client() as client:
        reply = client.post("/mutate", json=review(pod, uid=uid, name="web\nx"), headers=JSON)
    assert reply.status_code == 200
    assert reply.json()["response"]["uid"] == uid  # answered as sent; only the log escapes
    wait_for(lambda: "real-uid" in webhook.log_text())
    lines = webhook.log_text().splitlines()
    assert not any(line.startswith("2026-01-01") for line in lines)
    (logged,) = [line for line in lines if "real-uid" in line]
    # The uid holds spaces, so it is one quoted token; the name is escaped as it stands.
    assert 'uid="real-uid\\n2026-01-01 00:00:00,000 INFO webhook uid=forged' in logged
    assert "\\r" in logged
    assert "name=web\\nx" in logged
    assert "\x1b" not in webhook.log_text() and "\r" not in webhook.log_text()


def test_a_refused_body_cannot_forge_a_line_either(webhook: RunningWebhook) -> None:
    body = review(simple_pod())
    body["apiVersion"] = f"v9\n{FORGED}"
    with webhook.client() as client:
        assert client.post("/mutate", json=body, headers=JSON).status_code == 400
    wait_for(lambda: "refused request (400 malformed)" in webhook.log_text())
    assert not any(line.startswith("2026-01-01") for line in webhook.log_text().splitlines())


def test_a_field_with_spaces_is_one_quoted_token(webhook: RunningWebhook) -> None:
    pod = simple_pod({"oomdump.io/inject": "disabled"})
    with webhook.client() as client:
        client.post("/mutate", json=review(pod, uid="u2 result=injected"), headers=JSON)
    wait_for(lambda: 'uid="u2 result=injected"' in webhook.log_text())


def test_escape_leaves_printable_text_alone_and_names_each_control() -> None:
    assert escape("uid=abc name=wéb ✓") == "uid=abc name=wéb ✓"
    assert escape("a\nb\rc\td\x1be\x7ff\x85g\u2028h\x00") == (
        "a\\nb\\rc\\td\\x1be\\x7ff\\x85g\\u2028h\\x00"
    )


def test_tracebacks_keep_their_lines() -> None:
    formatter = EscapingFormatter("%(message)s")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("webhook", logging.ERROR, __file__, 1, "x\n%s", ("y",), None)
        record.exc_info = sys.exc_info()
    text = formatter.format(record)
    assert text.startswith("x\\ny\nTraceback (most recent call last):\n")
