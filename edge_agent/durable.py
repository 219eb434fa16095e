"""Durability on disk: fsync a file, or a directory after a rename or a create in it (the
one helper every writer uses: the store's recovery and encryption, attachments, drop folders,
config edits, central's files and exports)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path | str) -> None:
    """fsync ``path``: a file's data, or a directory's entries (so a rename in it survives a
    power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
