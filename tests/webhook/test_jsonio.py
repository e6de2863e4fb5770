"""Both JSON paths (orjson when installed, the standard library otherwise) behave alike."""

import json

import pytest

from webhook import jsonio

PATHS = ["installed", "stdlib"]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "installed" and jsonio.orjson is None:
        pytest.skip("orjson is not installed here; the stdlib path is the one in use")
    if request.param == "stdlib":
        monkeypatch.setattr(jsonio, "orjson", None)
    return request.param


def test_round_trip_is_compact_utf8(path: str) -> None:
    value = {"a": [1, 2.5, True, None], "ü": "/~ \u2603"}
    encoded = jsonio.dumps(value)
    assert isinstance(encoded, bytes)
    assert b" " not in encoded.replace(b"/~ ", b"")
    assert jsonio.loads(encoded) == value
    assert json.loads(encoded) == value


@pytest.mark.parametrize("body", [b"{", b"[1,]", b"\xff", b"", b"NaN-ish"])
def test_invalid_json_raises_json_decode_error(path: str, body: bytes) -> None:
    with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
        jsonio.loads(body)
