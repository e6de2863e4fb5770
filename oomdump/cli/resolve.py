"""A DUMP argument as the operator gives it: a local file, a key, or a unique part of a key
that `dumps list` shows: a piece of it from the start of any segment (so the prefix may be left
out: `shop/api-7d9f8/2025-06-01T10`), or its end (`...-6060.pb.gz`); `.json` names the same dump,
and `s3://BUCKET/` in front is dropped."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oomdump.cli.errors import NOT_FOUND, CliError
from oomdump.cli.records import Record, metadata_key, parse_key, parse_metadata
from oomdump.cli.stores import (
    MAX_METADATA_BYTES,
    MAX_OBJECT_BYTES,
    Store,
    read_file,
)
from sidecar.spool import METADATA_SUFFIX, PROFILE_SUFFIX

_SHOWN = 10  # candidates named in an "ambiguous" message


@dataclass
class Dump:
    name: str  # the key, or the local path as given
    url: str  # s3://bucket/key or an absolute path
    record: Record | None  # what the key (or file name) says, when it follows the layout
    local_path: Path | None
    _read: Callable[[int], bytes]
    _read_metadata: Callable[[], bytes | None]

    def read(self, limit: int = MAX_OBJECT_BYTES) -> bytes:
        return self._read(limit)

    def metadata(self) -> dict[str, Any] | None:
        """The `.json` beside the profile; None when absent or not a JSON object."""
        data = self._read_metadata()
        if data is None:
            return None
        try:
            return parse_metadata(data)
        except ValueError:
            return None


def _local(path: Path) -> Dump:
    sibling = path.with_name(path.name.removesuffix(PROFILE_SUFFIX) + METADATA_SUFFIX)

    def read_metadata() -> bytes | None:
        if sibling == path or not sibling.is_file():
            return None
        return read_file(sibling, MAX_METADATA_BYTES)

    record = parse_key(f"_/_/{path.name}")
    return Dump(
        str(path),
        str(path.resolve()),
        record,
        path,
        lambda limit: read_file(path, limit),
        read_metadata,
    )


def _stored(store: Store, key: str, has_metadata: bool) -> Dump:
    def read_metadata() -> bytes | None:
        if not has_metadata:
            return None
        try:
            return store.read(metadata_key(key), MAX_METADATA_BYTES)
        except CliError:
            return None

    return Dump(
        key,
        store.describe(key),
        parse_key(key),
        None,
        lambda limit: store.read(key, limit),
        read_metadata,
    )


def _normalise(text: str, store: Store) -> str:
    bucket = getattr(store, "bucket", None)
    if bucket and text.startswith(f"s3://{bucket}/"):
        text = text.removeprefix(f"s3://{bucket}/")
    if text.endswith(METADATA_SUFFIX):
        text = text.removesuffix(METADATA_SUFFIX) + PROFILE_SUFFIX
    return text


def resolve(text: str, store: Store | None) -> Dump:
    """The one dump `text` names; CliError(NOT_FOUND) when none or several do."""
    if not text:
        raise CliError(NOT_FOUND, "an empty DUMP names no dump")
    path = Path(text)
    if path.exists():
        if not path.is_file():
            raise CliError(NOT_FOUND, f"{text} is not a regular file")
        return _local(path)
    if store is None:
        raise CliError(
            NOT_FOUND,
            f"{text!r} is not a file here, and no --bucket or --dir was given to look it up in",
        )
    wanted = _normalise(text, store)
    keys: set[str] = set()
    for item in store.objects(store.prefix):
        keys.add(item.key)
    profiles = sorted(k for k in keys if k.endswith(PROFILE_SUFFIX))
    exact = [k for k in profiles if k in (wanted, store.prefix + wanted, wanted + PROFILE_SUFFIX)]
    found = exact or [
        k
        for k in profiles
        if f"/{wanted}" in f"/{k}"  # from the start of any segment
        or k.endswith(wanted)
        or k.endswith(wanted + PROFILE_SUFFIX)
    ]
    if not found:
        raise CliError(
            NOT_FOUND,
            f"no dump matches {text!r} in {store.describe()} (`oomdump dumps list` shows the keys)",
        )
    if len(found) > 1:
        shown = "\n  ".join(found[:_SHOWN])
        more = f"\n  ... and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
        raise CliError(
            NOT_FOUND,
            f"{text!r} is ambiguous: {len(found)} dumps match; give more of the key:\n"
            f"  {shown}{more}",
        )
    key = found[0]
    return _stored(store, key, metadata_key(key) in keys)
