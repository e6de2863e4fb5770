"""Where dumps are: an S3 bucket (the standard AWS credential chain) or a local folder (a
DUMP_DIR copied off a node). Both list object keys and read one object with a byte cap.

boto3 is imported only when an S3 store is first used, so `--dir`, local files and `--help`
start fast and work without it.
"""

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from oomdump.cli.errors import NOT_A_PROFILE, NOT_FOUND, STORE, CliError

# A dump's profile is at most a few MiB (the watcher caps what it fetches); 64 MiB leaves
# room while bounding what a wrong or hostile object costs to read.
MAX_OBJECT_BYTES = 64 * 1024 * 1024
# Metadata documents are a few KiB.
MAX_METADATA_BYTES = 1024 * 1024
# Keys looked at in one listing; past this the listing stops and says so.
MAX_LISTED = 200_000
_TEMP_PREFIX = ".tmp-"  # the spool's half-written files (sidecar/spool.py)


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int


class Store(Protocol):
    prefix: str

    def describe(self, key: str = "") -> str:
        """`s3://bucket/key` or the local path, for messages and `-o json`."""
        ...

    def objects(self, under: str) -> Iterator[StoredObject]:
        """Every object whose key starts with `under`, at most MAX_LISTED."""
        ...

    def read(self, key: str, limit: int) -> bytes:
        """The object's bytes; CliError NOT_FOUND when absent, NOT_A_PROFILE past `limit`."""
        ...


def _too_large(where: str, limit: int) -> CliError:
    """Larger than any profile the watcher saves: not a dump, so not read."""
    return CliError(NOT_A_PROFILE, f"{where} is larger than {limit // (1024 * 1024)} MiB; not read")


class LocalStore:
    """A folder laid out as DUMP_DIR is: `<key>.pb.gz` and `<key>.json` beneath it."""

    def __init__(self, root: Path, prefix: str = "") -> None:
        if not root.is_dir():
            raise CliError(STORE, f"--dir {root}: no such folder")
        self.root = root
        self.prefix = prefix

    def describe(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def objects(self, under: str) -> Iterator[StoredObject]:
        count = 0
        # followlinks=False: a copied spool may hold links; their targets are not dumps.
        for folder, folders, files in os.walk(self.root, followlinks=False):
            folders.sort()
            for name in sorted(files):
                if name.startswith(_TEMP_PREFIX):
                    continue
                path = Path(folder, name)
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(under):
                    continue
                try:
                    info = path.lstat()
                except OSError:
                    continue
                if not stat.S_ISREG(info.st_mode):
                    continue
                count += 1
                if count > MAX_LISTED:
                    return
                yield StoredObject(key, info.st_size)

    def read(self, key: str, limit: int) -> bytes:
        path = self.root / key
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise CliError(NOT_FOUND, f"{key} is not beneath --dir {self.root}")
        return read_file(path, limit)


def read_file(path: Path, limit: int) -> bytes:
    """A regular file's bytes, at most `limit` of them (never a FIFO or device that blocks)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CliError(NOT_FOUND, f"{path}: no such file") from None
    except OSError as error:
        raise CliError(NOT_FOUND, f"{path}: {error.strerror}") from None
    with open(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise CliError(NOT_FOUND, f"{path} is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise _too_large(str(path), limit)
    return data


class S3Store:
    """A bucket, read through boto3 with the standard credential chain."""

    def __init__(
        self, bucket: str, prefix: str, endpoint_url: str | None, region: str | None
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self._client: Any = None

    def describe(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key or self.prefix}"

    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
                import botocore.config
            except ImportError:
                raise CliError(STORE, "boto3 is not installed; pip install boto3") from None
            config = botocore.config.Config(
                connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}
            )
            if self.endpoint_url:
                # S3-compatible stores on an IP or a single host cannot do virtual-host buckets.
                config = config.merge(botocore.config.Config(s3={"addressing_style": "path"}))
            self._client = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
            )
        return self._client

    def objects(self, under: str) -> Iterator[StoredObject]:
        count = 0
        try:
            pages = self.client().get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=under):
                for item in page.get("Contents", ()):
                    count += 1
                    if count > MAX_LISTED:
                        return
                    yield StoredObject(str(item["Key"]), int(item.get("Size", 0)))
        except Exception as error:
            raise self._explain(error, self.describe(under)) from None

    def read(self, key: str, limit: int) -> bytes:
        where = self.describe(key)
        try:
            answer = self.client().get_object(Bucket=self.bucket, Key=key)
            if int(answer.get("ContentLength", 0)) > limit:
                answer["Body"].close()
                raise _too_large(where, limit)
            body = answer["Body"]
            data = body.read(limit + 1)
            body.close()
        except CliError:
            raise
        except Exception as error:
            raise self._explain(error, where) from None
        if len(data) > limit:
            raise _too_large(where, limit)
        return data

    def _explain(self, error: Exception, where: str) -> CliError:
        """The store's failure as one line the operator can act on."""
        from botocore import exceptions

        endpoint = self.endpoint_url or "AWS S3"
        if isinstance(error, exceptions.ClientError):
            code = str(error.response.get("Error", {}).get("Code", "unknown"))
            if code in ("NoSuchKey", "404"):
                return CliError(NOT_FOUND, f"{where}: no such object")
            messages = {
                "NoSuchBucket": f"bucket {self.bucket!r} does not exist at {endpoint}",
                "InvalidAccessKeyId": f"the access key is not known to {endpoint}",
                "SignatureDoesNotMatch": f"the secret key is wrong for {endpoint}",
                "AccessDenied": f"the credentials may not read {where}",
            }
            return CliError(STORE, messages.get(code, f"{where}: {code}: {error}"))
        if isinstance(error, exceptions.NoCredentialsError):
            return CliError(
                STORE,
                "no AWS credentials found (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                "web identity or instance metadata); or read a copied DUMP_DIR with --dir",
            )
        if isinstance(error, exceptions.EndpointConnectionError | exceptions.ConnectTimeoutError):
            return CliError(STORE, f"cannot reach {endpoint}: {error}")
        return CliError(STORE, f"{where}: {type(error).__name__}: {error}")
