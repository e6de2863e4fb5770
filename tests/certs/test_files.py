"""The served-files folder: kubelet's Secret-volume layout, switched in one rename."""

import os
import threading
from pathlib import Path

from certs.files import DATA_LINK, read_files, write_files

NAMES = ("ca.crt", "tls.crt", "tls.key")


def pair(tag: str) -> dict[str, bytes]:
    return {name: f"{tag}:{name}".encode() * 1000 for name in NAMES}


def test_files_are_symlinks_through_one_data_link(tmp_path: Path) -> None:
    write_files(tmp_path, pair("one"))
    assert read_files(tmp_path, NAMES) == pair("one")
    for name in NAMES:
        assert os.readlink(tmp_path / name) == f"{DATA_LINK}/{name}"
    assert (tmp_path / DATA_LINK).resolve().parent == tmp_path.resolve()
    assert oct((tmp_path / "tls.key").stat().st_mode & 0o777) == "0o600"


def test_rewrite_replaces_content_and_removes_the_old_version(tmp_path: Path) -> None:
    write_files(tmp_path, pair("one"))
    write_files(tmp_path, pair("two"))
    assert read_files(tmp_path, NAMES) == pair("two")
    versions = [p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(versions) == 1


def test_plain_files_from_generate_are_taken_over(tmp_path: Path) -> None:
    for name, content in pair("plain").items():
        (tmp_path / name).write_bytes(content)
    write_files(tmp_path, pair("managed"))
    assert read_files(tmp_path, NAMES) == pair("managed")


def test_missing_folder_reads_as_absent(tmp_path: Path) -> None:
    assert read_files(tmp_path / "nowhere", NAMES) == dict.fromkeys(NAMES)


def test_reader_never_sees_a_mixed_pair(tmp_path: Path) -> None:
    """A reader resolving ..data once sees one version's files, however the writes race."""
    write_files(tmp_path, pair("v0"))
    stop = threading.Event()
    mixed: list[set[str]] = []

    def reader() -> None:
        while not stop.is_set():
            version = tmp_path / os.readlink(tmp_path / DATA_LINK)
            try:
                tags = {(version / n).read_bytes().split(b":")[0].decode() for n in NAMES}
            except FileNotFoundError:
                continue  # this version was retired mid-read; the next read sees the new one
            if len(tags) != 1:
                mixed.append(tags)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for round_ in range(200):
            write_files(tmp_path, pair(f"v{round_}"))
    finally:
        stop.set()
        thread.join(timeout=10)
    assert mixed == []
