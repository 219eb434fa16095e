"""Watched folders: devices that export files (ECG PDF or XML, SCP-ECG, camera JPEG/PNG,
spirometry PDF) drop them in a folder; the agent takes each file once it is complete.

"Complete" is decided by :class:`StableTracker` (pure): the file's size and mtime have not
changed for ``settle_s`` (a device still writing keeps changing them). Hidden files and the
usual partial-download names are never taken. A taken file is moved out of the drop folder
(to ``<folder>.taken/``) only after it is durable in the attachment store; a refusal (budget
spent) leaves it where it is, to be taken later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.durable import fsync_path
from edge_agent.errors import StoreError
from edge_agent.files.attachments import AttachmentsFull, AttachmentStore
from edge_agent.settings import WatchFolderSettings

log = logging.getLogger(__name__)
PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", "~")


@dataclass
class StableTracker:
    settle_s: float
    _seen: dict[str, tuple[int, int, float]] = field(default_factory=dict)  # size, mtime, since

    def observe(self, listing: dict[str, tuple[int, int]], now: float) -> list[str]:
        """``listing``: name -> (size, mtime_ns) now; the names stable for ``settle_s``."""
        for gone in set(self._seen) - set(listing):
            del self._seen[gone]
        ready = []
        for name, (size, mtime) in sorted(listing.items()):
            seen = self._seen.get(name)
            if seen is None or seen[:2] != (size, mtime):
                self._seen[name] = (size, mtime, now)
            elif now - seen[2] >= self.settle_s:
                ready.append(name)
        return ready

    def forget(self, name: str) -> None:
        self._seen.pop(name, None)


def candidate(name: str) -> bool:
    return not name.startswith(".") and not name.lower().endswith(PARTIAL_SUFFIXES)


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return out
    for entry in entries:
        if not candidate(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                out[entry.name] = (st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            continue
    return out


def taken_dir(folder: Path) -> Path:
    return folder.with_name(folder.name + ".taken")


def take(files: AttachmentStore, folder: Path, name: str, *, device: str, kind: str | None) -> str:
    """Store the file durably, then move it out of the drop folder; its file id."""
    path = folder / name
    added = files.add_file(path, kind=kind, device=device)
    done = taken_dir(folder)
    done.mkdir(mode=0o700, exist_ok=True)
    target = done / name
    if target.exists():
        target = done / f"{added.file_id[:12]}-{name}"
    os.replace(path, target)
    fsync_path(done)
    fsync_path(folder)
    return added.file_id


async def watch(files: AttachmentStore, cfg: WatchFolderSettings, stop: asyncio.Event) -> None:
    tracker = StableTracker(cfg.settle_s)
    loop = asyncio.get_running_loop()
    refused: set[str] = set()
    log.info("files: watching the drop folder of %s", cfg.device)
    while not stop.is_set():
        for name in tracker.observe(listing(cfg.path), loop.time()):
            try:
                await asyncio.to_thread(
                    take, files, cfg.path, name, device=cfg.device, kind=cfg.kind
                )
            except FileNotFoundError:
                pass  # taken away meanwhile
            except (AttachmentsFull, StoreError, OSError) as exc:
                if name not in refused:  # said once per file, tried again each poll
                    refused.add(name)
                    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                    log.error(
                        "files: a file from %s is left in its drop folder: %s", cfg.device, why
                    )
                continue
            refused.discard(name)
            tracker.forget(name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), cfg.poll_s)
