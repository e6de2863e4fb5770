"""`oomdump dumps list` over real dumps of the demo, from a local DUMP_DIR copy and from a real
MinIO: newest first, the filters, the metadata's figures, TOP from the metadata or the profile."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from oomdump.cli import humanize
from sidecar import heapprofile

from .captures import PREFIX, Captures
from .run import cli, table

pytestmark = pytest.mark.s3


@pytest.fixture(params=["dir", "s3"])
def where(request: pytest.FixtureRequest, captures: Captures) -> list[str]:
    if request.param == "dir":
        return ["--dir", str(captures.spool)]
    return request.getfixturevalue("s3")


def keys_newest_first(captures: Captures) -> list[str]:
    saved = captures.all()
    return [s.key for s in sorted(saved, key=lambda s: (s.key.split("/")[-1][:24], s.key))][::-1]


def test_lists_every_dump_newest_first_with_its_metadata(capsys, where, captures) -> None:
    result = cli(capsys, "dumps", "list", *where)
    assert result.code == 0, result.err
    rows = table(result.out)
    assert [r["KEY"] for r in rows] == keys_newest_first(captures)
    stamps = [r["WHEN"] for r in rows]
    assert stamps == sorted(stamps, reverse=True)
    by_key = {r["KEY"]: r for r in rows}
    for saved in captures.all():
        row, meta = by_key[saved.key], saved.metadata
        assert (row["NAMESPACE"], row["POD"]) == (meta["namespace"], meta["pod"])
        assert row["PROCESS"] == f"go-memory-leak/{meta['pid']}"
        assert row["PORT"] == str(meta["port"])
        assert row["GC"] == ("gc=1" if meta["gc"] else "first")
        usage = f"{humanize.size(meta['usage'])}/{humanize.size(meta['limit'])}"
        assert row["USAGE"] == f"{usage} ({meta['percent']:.0f}%)"


def test_top_column_comes_from_the_metadata_or_with_top_from_the_profile(
    capsys, where, captures
) -> None:
    plain = {r["KEY"]: r["TOP"] for r in table(cli(capsys, "dumps", "list", *where).out)}
    best = captures.old.metadata["top"][0]
    share = f"{100 * best['flat_share']:.0f}%"
    assert (
        plain[captures.old.key] == f"main.leakDocuments {humanize.size(best['flat_bytes'])} "
        f"({share})"
    )
    assert plain[captures.later.key] == "-"  # its metadata names no top, and no --top

    result = cli(capsys, "dumps", "list", "--top", *where)
    assert result.code == 0
    computed = {r["KEY"]: r["TOP"] for r in table(result.out)}
    for saved in (captures.first, captures.first_gc, captures.later):
        heap = heapprofile.read(saved.profile.read_bytes())
        leader = heapprofile.top(heap, n=1)[0]
        assert leader.name == "main.leakDocuments"
        expected = f"{leader.name} {humanize.size(leader.flat_bytes)}"
        assert computed[saved.key] == f"{expected} ({100 * leader.flat_share:.0f}%)"
    # The hostile profiles are refused by the bounded reader, each with its reason on stderr.
    for saved in captures.hostile:
        assert computed[saved.key] == "unreadable"
    assert "not-gzip" in result.err
    assert "too-large" in result.err


def test_filters_namespace_pod_since_limit(capsys, where, captures) -> None:
    def listed(*args: str) -> list[str]:
        result = cli(capsys, "dumps", "list", *where, *args)
        assert result.code == 0, result.err
        return [r["KEY"] for r in table(result.out)] if result.out else []

    everything = keys_newest_first(captures)
    api = [k for k in everything if "/shop/api-7d9f8/" in k]
    assert len(api) == 3
    assert listed("-n", "shop", "--pod", "api-7d9f8") == api
    assert listed("api-7d9f8", "-n", "shop") == api  # as typed after kubectl describe pod
    assert listed("api-7d9f8") == api
    assert listed("-n", "attic") == [s.key for s in reversed(captures.hostile)]
    assert listed("-n", "shop") == [k for k in everything if "/shop/" in k]
    assert listed("--since", "2h") == [k for k in everything if k != captures.old.key]
    assert listed("--since", "30m") == api
    assert listed("--limit", "2") == everything[:2]
    assert listed("-n", "nowhere") == []
    # With the watcher's S3_PREFIX given, the listing is narrowed to it on the store's side.
    assert listed("--prefix", PREFIX, "-n", "shop", "worker-1") == [captures.old.key]
    assert listed("--prefix", "other/") == []


def test_json_has_the_full_records(capsys, where, captures) -> None:
    result = cli(capsys, "dumps", "list", "-o", "json", *where)
    assert result.code == 0, result.err
    records = json.loads(result.out)
    assert [r["key"] for r in records] == keys_newest_first(captures)
    by_key = {r["key"]: r for r in records}
    for saved in captures.all():
        record = by_key[saved.key]
        assert record["metadata"] == saved.metadata
        assert record["bytes"] == saved.profile.stat().st_size
        assert (record["pid"], record["port"]) == (saved.metadata["pid"], saved.metadata["port"])
        when = datetime.fromisoformat(record["when"])
        assert abs(when - datetime.now(UTC)) < timedelta(hours=4)
        assert record["url"].endswith(saved.key)
    assert by_key[captures.old.key]["top"] == captures.old.metadata["top"]
    assert by_key[captures.old.key]["top_source"] == "metadata"
    assert by_key[captures.first.key]["top"] is None


def test_empty_listing_is_not_an_error(capsys, where) -> None:
    result = cli(capsys, "dumps", "list", "no-such-pod", "-n", "shop", *where)
    assert result.code == 0
    assert result.out == ""
    assert "No dumps found" in result.err
    as_json = cli(capsys, "dumps", "list", "no-such-pod", "-o", "json", *where)
    assert (as_json.code, json.loads(as_json.out)) == (0, [])


def test_missing_or_broken_metadata_still_lists_the_dump(capsys, captures, tmp_path) -> None:
    """A dump whose `.json` is absent (a crashed save) or not JSON is listed from its key."""
    for saved, metadata in ((captures.first, None), (captures.later, b"{not json")):
        target = tmp_path / saved.key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(saved.profile.read_bytes())
        if metadata is not None:
            target.with_name(target.name.removesuffix(".pb.gz") + ".json").write_bytes(metadata)
    result = cli(capsys, "dumps", "list", "--dir", str(tmp_path), "--top", "-o", "json")
    assert result.code == 0, result.err
    records = {r["key"]: r for r in json.loads(result.out)}
    assert records[captures.first.key]["metadata"] is None
    assert records[captures.first.key]["metadata_key"] is None
    assert records[captures.later.key]["metadata_error"].startswith("not JSON")
    for record in records.values():
        assert record["pid"] == captures.first.metadata["pid"]
        assert record["top"][0]["name"] == "main.leakDocuments"
    rows = table(cli(capsys, "dumps", "list", "--dir", str(tmp_path)).out)
    assert {(r["USAGE"], r["GC"], r["PROCESS"]) for r in rows} == {
        ("-", "-", f"go-memory-leak/{captures.first.metadata['pid']}")
    }


def test_names_from_the_app_cannot_drive_the_terminal(capsys, captures, tmp_path) -> None:
    """comm comes from the app and reaches the metadata raw: escapes are shown, not sent."""
    saved = captures.first
    target = tmp_path / saved.key
    target.parent.mkdir(parents=True)
    target.write_bytes(saved.profile.read_bytes())
    hostile = {**saved.metadata, "comm": "app\x1b]0;owned\x07\x1b[2J"}
    hostile["top"] = [{"name": "main.f\x1b[31m", "flat_bytes": 1, "flat_share": 1.0}]
    target.with_name(target.name.removesuffix(".pb.gz") + ".json").write_text(json.dumps(hostile))
    result = cli(capsys, "dumps", "list", "--dir", str(tmp_path))
    assert result.code == 0, result.err
    assert "\x1b" not in result.out and "\x07" not in result.out
    assert "app\\x1b]0;owned\\x07\\x1b[2J/" in result.out
    assert "main.f\\x1b[31m 1B (100%)" in result.out
