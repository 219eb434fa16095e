"""A "lazy" SQLite VFS: writes stay in process memory until the file is synced.

Registered with ctypes into the very ``libsqlite3.so.0`` that Python's ``_sqlite3`` links, so
``sqlite3.connect("file:/path/db?vfs=lazy", uri=True)`` runs the real store code (sqlite-utils
included) over it unchanged. It is the default VFS ("unix") with its io methods wrapped:
``xWrite``/``xTruncate`` are appended to a per-file list held in this process, ``xRead`` and
``xFileSize`` see them, ``xSync`` applies them with the native methods and then syncs natively,
``xClose`` applies them (a clean close reaches the disk). A SIGKILL of the process therefore
drops every write that SQLite had not synced: a power cut (see docs FAULT-TESTING.md §2.3).

Limits (state them in the tests that use it): only the SQLite files of this process (main
database, WAL, rollback journal) are lazy; the wal-index (``-shm``) is real shared memory;
create, delete and rename count as durable; all unsynced writes are dropped, none are torn or
reordered; another process cannot see this writer's unsynced pages (single-writer tests).
Memory-mapped I/O is disabled on lazy files (the io methods are offered as version 2).
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, field
from typing import Final

__all__ = ["NAME", "pending_bytes", "register"]

NAME: Final = "lazy"

SQLITE_OK: Final = 0
SQLITE_IOERR: Final = 10
SQLITE_IOERR_SHORT_READ: Final = 522
# Files made lazy: the main database, its WAL and its rollback journal (temp files stay native).
OPEN_MAIN_DB: Final = 0x00000100
OPEN_MAIN_JOURNAL: Final = 0x00000800
OPEN_WAL: Final = 0x00080000
LAZY_KINDS: Final = OPEN_MAIN_DB | OPEN_MAIN_JOURNAL | OPEN_WAL

c_int64 = ctypes.c_int64
voidp = ctypes.c_void_p

# int (*)(sqlite3_file*, ...) signatures of the io methods we wrap
CLOSE = ctypes.CFUNCTYPE(ctypes.c_int, voidp)
READ = ctypes.CFUNCTYPE(ctypes.c_int, voidp, voidp, ctypes.c_int, c_int64)
WRITE = ctypes.CFUNCTYPE(ctypes.c_int, voidp, voidp, ctypes.c_int, c_int64)
TRUNCATE = ctypes.CFUNCTYPE(ctypes.c_int, voidp, c_int64)
SYNC = ctypes.CFUNCTYPE(ctypes.c_int, voidp, ctypes.c_int)
FILESIZE = ctypes.CFUNCTYPE(ctypes.c_int, voidp, ctypes.POINTER(c_int64))
# int xOpen(sqlite3_vfs*, sqlite3_filename, sqlite3_file*, int flags, int *pOutFlags);
# the file name stays a raw pointer: URI parameters live after its terminating NUL.
OPEN = ctypes.CFUNCTYPE(
    ctypes.c_int, voidp, voidp, voidp, ctypes.c_int, ctypes.POINTER(ctypes.c_int)
)


class IoMethods(ctypes.Structure):
    """``sqlite3_io_methods`` (version 3 layout)."""

    _fields_ = [
        ("iVersion", ctypes.c_int),
        ("xClose", CLOSE),
        ("xRead", READ),
        ("xWrite", WRITE),
        ("xTruncate", TRUNCATE),
        ("xSync", SYNC),
        ("xFileSize", FILESIZE),
        ("xLock", voidp),
        ("xUnlock", voidp),
        ("xCheckReservedLock", voidp),
        ("xFileControl", voidp),
        ("xSectorSize", voidp),
        ("xDeviceCharacteristics", voidp),
        ("xShmMap", voidp),
        ("xShmLock", voidp),
        ("xShmBarrier", voidp),
        ("xShmUnmap", voidp),
        ("xFetch", voidp),
        ("xUnfetch", voidp),
    ]


class File(ctypes.Structure):
    """The head of every ``sqlite3_file``: its methods pointer."""

    _fields_ = [("pMethods", ctypes.POINTER(IoMethods))]


class Vfs(ctypes.Structure):
    """``sqlite3_vfs`` (version 3 layout); only xOpen is replaced, the rest copied."""

    _fields_ = [
        ("iVersion", ctypes.c_int),
        ("szOsFile", ctypes.c_int),
        ("mxPathname", ctypes.c_int),
        ("pNext", voidp),
        ("zName", ctypes.c_char_p),
        ("pAppData", voidp),
        ("xOpen", OPEN),
        ("xDelete", voidp),
        ("xAccess", voidp),
        ("xFullPathname", voidp),
        ("xDlOpen", voidp),
        ("xDlError", voidp),
        ("xDlSym", voidp),
        ("xDlClose", voidp),
        ("xRandomness", voidp),
        ("xSleep", voidp),
        ("xCurrentTime", voidp),
        ("xGetLastError", voidp),
        ("xCurrentTimeInt64", voidp),
        ("xSetSystemCall", voidp),
        ("xGetSystemCall", voidp),
        ("xNextSystemCall", voidp),
    ]


@dataclass
class _Write:
    offset: int
    data: bytes


@dataclass
class _Truncate:
    size: int


@dataclass
class _Pending:
    """One open lazy file: its native methods and the writes not yet synced, in order."""

    native: IoMethods
    ops: list[_Write | _Truncate] = field(default_factory=list)

    def logical_size(self, native_size: int) -> int:
        size = native_size
        for op in self.ops:
            size = max(size, op.offset + len(op.data)) if isinstance(op, _Write) else op.size
        return size

    def overlay(self, buf: bytearray, offset: int) -> None:
        """Apply the pending operations, in order, to ``buf`` (the native bytes at offset)."""
        end = offset + len(buf)
        for op in self.ops:
            if isinstance(op, _Write):
                lo, hi = max(offset, op.offset), min(end, op.offset + len(op.data))
                if lo < hi:
                    buf[lo - offset : hi - offset] = op.data[lo - op.offset : hi - op.offset]
            elif op.size < end:
                start = max(op.size, offset) - offset
                buf[start:] = bytes(len(buf) - start)


_lock = threading.Lock()
_files: dict[int, _Pending] = {}  # sqlite3_file address -> state
_wrapped: dict[int, IoMethods] = {}  # native io_methods address -> our copy (kept alive)
_keep: list[object] = []  # the VFS struct and callbacks must outlive every connection


def pending_bytes() -> int:
    """Bytes written and not yet synced, over every lazy file of this process."""
    with _lock:
        return sum(len(op.data) for p in _files.values() for op in p.ops if isinstance(op, _Write))


def _state(pfile: int | None) -> _Pending:
    with _lock:
        return _files[pfile or 0]


def _native_size(state: _Pending, pfile: int | None) -> tuple[int, int]:
    size = c_int64(0)
    rc = int(state.native.xFileSize(pfile, ctypes.byref(size)))
    return rc, int(size.value)


def _apply(state: _Pending, pfile: int | None) -> int:
    """Write the pending operations through the native methods (no sync)."""
    while state.ops:
        op = state.ops[0]
        if isinstance(op, _Write):
            data = ctypes.create_string_buffer(op.data, len(op.data))
            rc = int(state.native.xWrite(pfile, ctypes.cast(data, voidp), len(op.data), op.offset))
        else:
            rc = int(state.native.xTruncate(pfile, op.size))
        if rc != SQLITE_OK:
            return rc
        state.ops.pop(0)
    return SQLITE_OK


def _x_close(pfile: int | None) -> int:
    try:
        with _lock:
            state = _files.pop(pfile or 0)
        rc = _apply(state, pfile)
        closed = int(state.native.xClose(pfile))
        return rc if rc != SQLITE_OK else closed
    except Exception:
        return SQLITE_IOERR


def _x_read(pfile: int | None, out: int | None, amount: int, offset: int) -> int:
    try:
        state = _state(pfile)
        if not state.ops:
            return int(state.native.xRead(pfile, out, amount, offset))
        rc, native = _native_size(state, pfile)
        if rc != SQLITE_OK:
            return rc
        buf = bytearray(amount)
        if offset < native:
            raw = ctypes.create_string_buffer(amount)
            rc = int(state.native.xRead(pfile, ctypes.cast(raw, voidp), amount, offset))
            if rc not in (SQLITE_OK, SQLITE_IOERR_SHORT_READ):
                return rc
            buf[:] = raw.raw[:amount]
            if native < offset + amount:  # past the native end: zeros (SQLite's contract)
                buf[native - offset :] = bytes(offset + amount - native)
        state.overlay(buf, offset)
        size = state.logical_size(native)
        short = size < offset + amount
        if short:
            start = max(0, size - offset)
            buf[start:] = bytes(amount - start)
        ctypes.memmove(out or 0, bytes(buf), amount)
        return SQLITE_IOERR_SHORT_READ if short else SQLITE_OK
    except Exception:
        return SQLITE_IOERR


def _x_write(pfile: int | None, data: int | None, amount: int, offset: int) -> int:
    try:
        state = _state(pfile)
        state.ops.append(_Write(offset, ctypes.string_at(data or 0, amount)))
        return SQLITE_OK
    except Exception:
        return SQLITE_IOERR


def _x_truncate(pfile: int | None, size: int) -> int:
    try:
        _state(pfile).ops.append(_Truncate(size))
        return SQLITE_OK
    except Exception:
        return SQLITE_IOERR


def _x_sync(pfile: int | None, flags: int) -> int:
    try:
        state = _state(pfile)
        rc = _apply(state, pfile)
        if rc != SQLITE_OK:
            return rc
        return int(state.native.xSync(pfile, flags))
    except Exception:
        return SQLITE_IOERR


def _x_file_size(pfile: int | None, out: ctypes._Pointer[ctypes.c_int64]) -> int:
    try:
        state = _state(pfile)
        rc, native = _native_size(state, pfile)
        if rc != SQLITE_OK:
            return rc
        out[0] = state.logical_size(native)
        return SQLITE_OK
    except Exception:
        return SQLITE_IOERR


# The C callbacks (module-level: they must outlive every connection).
_C_CLOSE = CLOSE(_x_close)
_C_READ = READ(_x_read)
_C_WRITE = WRITE(_x_write)
_C_TRUNCATE = TRUNCATE(_x_truncate)
_C_SYNC = SYNC(_x_sync)
_C_FILESIZE = FILESIZE(_x_file_size)


def _wrap(native_ptr: ctypes._Pointer[IoMethods]) -> IoMethods:
    """Our copy of a native io_methods table, built once per table."""
    address = ctypes.addressof(native_ptr.contents)
    with _lock:
        mine = _wrapped.get(address)
        if mine is None:
            mine = IoMethods.from_buffer_copy(native_ptr.contents)
            mine.iVersion = min(int(native_ptr.contents.iVersion), 2)  # no xFetch (mmap)
            mine.xClose, mine.xRead, mine.xWrite = _C_CLOSE, _C_READ, _C_WRITE
            mine.xTruncate, mine.xSync, mine.xFileSize = _C_TRUNCATE, _C_SYNC, _C_FILESIZE
            _wrapped[address] = mine
            _keep.append(native_ptr.contents)
        return mine


def register(library: str = "libsqlite3.so.0") -> None:
    """Register the ``lazy`` VFS (once per process) in the SQLite library ``_sqlite3`` uses."""
    lib = ctypes.CDLL(library)
    lib.sqlite3_vfs_find.restype = ctypes.POINTER(Vfs)
    lib.sqlite3_vfs_find.argtypes = [ctypes.c_char_p]
    lib.sqlite3_vfs_register.restype = ctypes.c_int
    lib.sqlite3_vfs_register.argtypes = [ctypes.POINTER(Vfs), ctypes.c_int]
    if lib.sqlite3_vfs_find(NAME.encode()):
        return
    base = lib.sqlite3_vfs_find(None).contents
    native_open = base.xOpen

    def x_open(
        vfs: int | None,
        name: int | None,
        pfile: int | None,
        flags: int,
        out_flags: ctypes._Pointer[ctypes.c_int],
    ) -> int:
        try:
            rc = int(native_open(vfs, name, pfile, flags, out_flags))
            if rc != SQLITE_OK or not flags & LAZY_KINDS:
                return rc
            head = File.from_address(pfile or 0)
            if not head.pMethods:
                return rc
            native = head.pMethods.contents
            mine = _wrap(head.pMethods)
            with _lock:
                _files[pfile or 0] = _Pending(native)
            head.pMethods = ctypes.pointer(mine)
            return rc
        except Exception:
            return SQLITE_IOERR

    c_open = OPEN(x_open)
    vfs = Vfs.from_buffer_copy(base)
    vfs.zName = NAME.encode()
    vfs.xOpen = c_open
    vfs.pNext = None
    _keep.extend([vfs, c_open, lib])
    rc = int(lib.sqlite3_vfs_register(ctypes.byref(vfs), 0))
    if rc != SQLITE_OK:
        raise OSError(f"sqlite3_vfs_register failed ({rc})")
