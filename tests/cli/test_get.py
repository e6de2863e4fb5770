"""`oomdump dumps get`: the profile (and its .json) saved byte for byte, from a key or a unique
part of one; missing and ambiguous names and existing files refused with exit 1."""

import json
from pathlib import Path

import pytest

from oomdump.cli import errors

from .captures import Captures
from .run import cli

pytestmark = pytest.mark.s3


@pytest.fixture(params=["dir", "s3"])
def where(request: pytest.FixtureRequest, captures: Captures) -> list[str]:
    if request.param == "dir":
        return ["--dir", str(captures.spool)]
    return request.getfixturevalue("s3")


def test_get_by_key_saves_the_profile_and_metadata(capsys, where, captures, tmp_path) -> None:
    saved = captures.later
    target = tmp_path / "later.pb.gz"
    result = cli(capsys, "dumps", "get", saved.key, "-o", str(target), "--metadata", *where)
    assert result.code == 0, result.err
    assert target.read_bytes() == saved.profile.read_bytes()
    assert json.loads((tmp_path / "later.json").read_text()) == saved.metadata
    assert str(target) in result.err


def test_get_by_a_unique_part_of_the_key(capsys, where, captures, tmp_path) -> None:
    saved = captures.old
    file_name = saved.key.rsplit("/", 1)[-1]
    without_prefix = saved.key.split("/", 1)[1]  # shop/worker-1/..., as `list` users paste it
    names = [file_name, without_prefix, "worker-1/", saved.key.removesuffix(".pb.gz") + ".json"]
    if "--bucket" in where:
        names.append(f"s3://dumps/{saved.key}")  # as an Event or `-o json` names it
    for name in names:
        folder = tmp_path / str(abs(hash(name)))
        folder.mkdir()
        result = cli(capsys, "dumps", "get", name, "-o", str(folder), *where)
        assert result.code == 0, (name, result.err)
        assert (folder / file_name).read_bytes() == saved.profile.read_bytes(), name


def test_an_existing_file_is_kept_unless_forced(capsys, where, captures, tmp_path) -> None:
    target = tmp_path / "dump.pb.gz"
    target.write_bytes(b"mine")
    result = cli(capsys, "dumps", "get", captures.first.key, "-o", str(target), *where)
    assert result.code == errors.NOT_FOUND
    assert "exists; use --force" in result.err
    assert target.read_bytes() == b"mine"
    forced = cli(capsys, "dumps", "get", captures.first.key, "-o", str(target), "--force", *where)
    assert forced.code == 0, forced.err
    assert target.read_bytes() == captures.first.profile.read_bytes()


def test_missing_and_ambiguous_names_exit_1_and_say_why(capsys, where, captures, tmp_path) -> None:
    missing = cli(capsys, "dumps", "get", "shop/nobody/", "-o", str(tmp_path), *where)
    assert missing.code == errors.NOT_FOUND
    assert "no dump matches 'shop/nobody/'" in missing.err
    assert "dumps list" in missing.err
    ambiguous = cli(capsys, "dumps", "get", "api-7d9f8", "-o", str(tmp_path), *where)
    assert ambiguous.code == errors.NOT_FOUND
    assert "'api-7d9f8' is ambiguous: 3 dumps match" in ambiguous.err
    for saved in (captures.first, captures.first_gc, captures.later):
        assert saved.key in ambiguous.err
    assert "Traceback" not in missing.err + ambiguous.err
    assert list(tmp_path.iterdir()) == []


def test_without_a_store_a_name_that_is_no_file_is_not_found(capsys, tmp_path: Path) -> None:
    result = cli(capsys, "dumps", "get", str(tmp_path / "absent.pb.gz"))
    assert result.code == errors.NOT_FOUND
    assert "is not a file here, and no --bucket or --dir" in result.err


def test_a_local_file_is_copied_with_its_metadata(capsys, captures, tmp_path) -> None:
    target = tmp_path / "copy.pb.gz"
    result = cli(
        capsys, "dumps", "get", str(captures.first.profile), "-o", str(target), "--metadata"
    )
    assert result.code == 0, result.err
    assert target.read_bytes() == captures.first.profile.read_bytes()
    assert json.loads((tmp_path / "copy.json").read_text()) == captures.first.metadata
