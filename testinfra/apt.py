"""Debian packages the tests need, installed with apt-get when missing (as root; a fresh
machine gets them from `make test`, a warm one spends one dpkg-query per package)."""

import shlex
import subprocess
from collections.abc import Iterable


class AptError(RuntimeError):
    """A package could not be installed; the message has apt's own words."""


def missing(packages: Iterable[str]) -> list[str]:
    absent = []
    for package in packages:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package],
            capture_output=True,
            text=True,
            check=False,
        )
        if status.returncode != 0 or "install ok installed" not in status.stdout:
            absent.append(package)
    return absent


def _run(args: list[str], timeout: float) -> None:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise AptError(f"`{shlex.join(args)}`: {error}") from error
    if result.returncode != 0:
        raise AptError(
            f"`{shlex.join(args)}` exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )


def ensure(packages: Iterable[str], timeout: float = 900) -> list[str]:
    """Install what of `packages` is missing (apt-get update first); what was installed."""
    absent = missing(packages)
    if absent:
        _run(["apt-get", "update", "-q"], timeout)
        _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *absent], timeout)
    return absent
