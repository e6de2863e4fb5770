"""The folder the webhook serves its certificate from, swapped atomically.

The layout is the one kubelet uses for Secret volumes: the files live in a timestamped
directory, `..data` is a symlink to it and each file is a symlink through `..data`. One
`rename` of `..data` switches every file at once, so a reader never pairs a new
certificate with an old key, and the webhook sees the same layout whether its folder is
an emptyDir kept by `bootstrap` or a Secret volume (the cert-manager overlay).
"""

import os
import shutil
import tempfile
from pathlib import Path

DATA_LINK = "..data"


def read_files(folder: Path, names: tuple[str, ...]) -> dict[str, bytes | None]:
    """The current content of each file (None when absent or unreadable)."""
    contents: dict[str, bytes | None] = {}
    for name in names:
        try:
            contents[name] = (folder / name).read_bytes()
        except OSError:
            contents[name] = None
    return contents


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Replace the files in `folder` by `files` in one atomic switch."""
    folder.mkdir(parents=True, exist_ok=True)
    data_link = folder / DATA_LINK
    previous = os.readlink(data_link) if data_link.is_symlink() else None
    version = Path(tempfile.mkdtemp(prefix="..", dir=folder))
    for name, content in files.items():
        path = version / name
        path.write_bytes(content)
        path.chmod(0o644 if name.endswith(".crt") else 0o600)
    version.chmod(0o755)
    staged_link = folder / f"{DATA_LINK}_tmp"
    staged_link.unlink(missing_ok=True)
    staged_link.symlink_to(version.name)
    os.replace(staged_link, data_link)
    for name in files:
        target = Path(DATA_LINK) / name
        path = folder / name
        if path.is_symlink() and Path(os.readlink(path)) == target:
            continue
        staged = folder / f".{name}.tmp"
        staged.unlink(missing_ok=True)
        staged.symlink_to(target)
        os.replace(staged, path)
    if previous and previous != version.name:
        shutil.rmtree(folder / previous, ignore_errors=True)
