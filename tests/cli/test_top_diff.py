"""`oomdump dumps top` and `dumps diff` on real dumps of the demo agree with `go tool pprof`
on the same files (no Go needed by the CLI); hostile profiles are refused with the reason."""

import json
import secrets
import time

import pytest

from oomdump.cli import errors, humanize

from .captures import Captures
from .run import cli, pprof_top, table

pytestmark = pytest.mark.s3


@pytest.fixture(params=["file", "s3"])
def where(request: pytest.FixtureRequest, captures: Captures) -> list[str]:
    """No flags: DUMP is the local file; or the bucket, with DUMP the key."""
    return [] if request.param == "file" else request.getfixturevalue("s3")


def name(saved, where: list[str]) -> str:
    return saved.key if where else str(saved.profile)


@pytest.mark.parametrize("sample_index", ["inuse_space", "alloc_space"])
def test_top_agrees_with_go_tool_pprof(capsys, go, where, captures, sample_index) -> None:
    for saved in (captures.first, captures.first_gc, captures.later):
        theirs = pprof_top(go, f"-sample_index={sample_index}", str(saved.profile))
        result = cli(
            capsys,
            "dumps",
            "top",
            name(saved, where),
            "--sample-index",
            sample_index,
            "-n",
            "100",
            "-o",
            "json",
            *where,
        )
        assert result.code == 0, result.err
        ours = json.loads(result.out)
        assert ours["sample_index"] == sample_index
        rows = [(f["name"], f["flat_bytes"], f["cum_bytes"]) for f in ours["functions"]]
        assert rows == theirs, saved.key
        if sample_index == "inuse_space":
            assert rows[0][0] == "main.leakDocuments"


def test_top_table(capsys, go, where, captures) -> None:
    saved = captures.later
    theirs = pprof_top(go, "-sample_index=inuse_space", str(saved.profile))
    result = cli(capsys, "dumps", "top", name(saved, where), "-n", "3", *where)
    assert result.code == 0, result.err
    heading, body = result.out.split("\n", 1)
    assert heading.startswith(f"{name(saved, where)}: inuse_space")
    rows = table(body)
    assert len(rows) == 3
    assert [r["FUNCTION"] for r in rows] == [n for n, _, _ in theirs[:3]]
    assert rows[0]["FLAT"] == humanize.size(theirs[0][1])
    assert rows[0]["CUM"] == humanize.size(theirs[0][2])


def test_top_by_cum_agrees_with_go_tool_pprof_cum(capsys, go, where, captures) -> None:
    saved = captures.later
    theirs = pprof_top(go, "-sample_index=inuse_space", "-cum", str(saved.profile))
    result = cli(
        capsys, "dumps", "top", name(saved, where), "--cum", "-n", "100", "-o", "json", *where
    )
    ours = [(f["name"], f["cum_bytes"]) for f in json.loads(result.out)["functions"]]
    # Ties in cum are ordered by name here, by Go's own rule there: compare as sets per value.
    assert sorted(ours) == sorted((n, c) for n, _, c in theirs)
    assert [c for _, c in ours] == sorted((c for _, _, c in theirs), reverse=True)


def test_diff_names_the_growing_leak_as_diff_base_does(capsys, go, where, captures) -> None:
    before, after = captures.first_gc, captures.later
    theirs = pprof_top(
        go, "-sample_index=inuse_space", f"-diff_base={before.profile}", str(after.profile)
    )
    grown = [(n, flat) for n, flat, _ in theirs if flat > 0]
    result = cli(
        capsys,
        "dumps",
        "diff",
        name(before, where),
        name(after, where),
        "-o",
        "json",
        "-n",
        "100",
        *where,
    )
    assert result.code == 0, result.err
    ours = json.loads(result.out)["growth"]
    assert [(g["name"], g["delta_bytes"]) for g in ours] == grown
    assert ours[0]["name"] == "main.leakDocuments"
    assert ours[0]["delta_bytes"] > 4 * 1024 * 1024  # seven cycles of 2 MiB, sampled

    shown = cli(capsys, "dumps", "diff", name(before, where), name(after, where), *where)
    rows = table(shown.out.split("\n", 1)[1])
    assert rows[0]["FUNCTION"] == "main.leakDocuments"
    assert rows[0]["GREW"] == "+" + humanize.size(grown[0][1])
    # The other way round nothing grew, and the order is pointed out.
    backwards = cli(capsys, "dumps", "diff", name(after, where), name(before, where), *where)
    assert backwards.code == 0
    assert "Nothing grew." in backwards.err
    assert "is later than" in backwards.err


def test_hostile_profiles_are_refused_with_the_reason(capsys, where, captures) -> None:
    reasons = ["not-gzip", "too-large"]  # random bytes; a 64 MiB gzip bomb of 64 KiB
    for saved, reason in zip(captures.hostile, reasons, strict=True):
        started = time.monotonic()
        result = cli(capsys, "dumps", "top", name(saved, where), *where)
        assert time.monotonic() - started < 10
        assert result.code == errors.NOT_A_PROFILE, result.err
        assert f"is not a heap profile oomdump can read: {reason}" in result.err
        assert "Traceback" not in result.err
        assert result.out == ""
        diff = cli(capsys, "dumps", "diff", name(captures.first, where), name(saved, where), *where)
        assert diff.code == errors.NOT_A_PROFILE
        assert reason in diff.err


def test_a_file_that_is_no_profile_is_refused(capsys, captures, tmp_path) -> None:
    metadata = captures.first.profile.with_name(
        captures.first.profile.name.removesuffix(".pb.gz") + ".json"
    )
    result = cli(capsys, "dumps", "top", str(metadata))
    assert result.code == errors.NOT_A_PROFILE
    assert "not-gzip" in result.err
    folder = cli(capsys, "dumps", "top", str(tmp_path))
    assert folder.code == errors.NOT_FOUND
    assert "is not a regular file" in folder.err


def test_an_object_past_the_size_cap_is_not_read(capsys, s3, minio, tmp_path) -> None:
    from oomdump.cli.stores import MAX_OBJECT_BYTES

    bucket = f"huge-{secrets.token_hex(4)}"
    minio.make_bucket(bucket)
    key = "shop/api-0/2025-01-01T00-00-00.000Z-app-1-6060.pb.gz"
    minio.client().put_object(
        Bucket=bucket, Key=key, Body=b"\x1f\x8b" * (MAX_OBJECT_BYTES // 2 + 1)
    )
    flags = ["--bucket", bucket, "--endpoint-url", minio.endpoint_url]
    result = cli(capsys, "dumps", "top", "api-0/", *flags)
    assert result.code == errors.NOT_A_PROFILE
    assert f"s3://{bucket}/{key} is larger than 64 MiB; not read" in result.err
    local = tmp_path / "huge.pb.gz"
    with local.open("wb") as handle:
        handle.truncate(MAX_OBJECT_BYTES + 1)
    result = cli(capsys, "dumps", "top", str(local))
    assert result.code == errors.NOT_A_PROFILE
    assert "is larger than 64 MiB" in result.err
