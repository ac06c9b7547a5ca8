"""Prometheus' multiprocess files that a full disk cannot turn into SIGBUS.

prometheus_client (multiprocess mode) keeps each process's samples in a file it maps into
memory (prometheus_client.mmap_dict.MmapedDict): it sizes the file with ftruncate, which
allocates no disk blocks (a sparse file), then writes through the map. When a write lands on a
page with no block behind it and the file system has none left, the kernel cannot fault the page
in and sends SIGBUS: the whole server died within one or two requests of the state folder
filling up (3 times in 3).

PreallocatedMmapedDict reserves the blocks with posix_fallocate(3) before any page is touched,
at creation and at each growth, so the map only ever writes to blocks that exist. On a full
disk the reservation fails with ENOSPC, an ordinary error, and a sample that cannot be added is
kept in memory by prometheus_client (its value object) and written at its next change once
there is room. A process whose file cannot even be created keeps its samples in anonymous
memory: serving goes on, those samples are missing from /metrics until it restarts. Measured:
on a 2 MiB tmpfs filled to the last byte, the stock class dies of SIGBUS at its first new
series past the first 64 KiB, and at once for a file created on the full disk; this one does not.
Reserved blocks cannot be taken back by a copy-on-write file system (btrfs, ZFS overwrite out of
place), so there SIGBUS stays possible: keep CATDOG_METRICS_DIR on ext4, XFS or tmpfs.

install() puts it in place; call it before the first metric is made (catdog.web.metrics does).
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import struct
from typing import Any

from prometheus_client import values
from prometheus_client.mmap_dict import _INITIAL_MMAP_SIZE, MmapedDict

log = logging.getLogger(__name__)

_ENTRY_OVERHEAD = 4 + 8 + 16  # length prefix, padding (at most 8), value and timestamp (mmap_dict's layout)


class PreallocatedMmapedDict(MmapedDict):
    """prometheus_client's MmapedDict, its file's blocks reserved before the map writes to them.

    Never raises OSError from write_value/read_value: a sample that cannot be stored now is
    kept by the caller's value object and written at its next change.
    """

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        self.detached = False  # True: an anonymous map (the file could not be made)
        if read_mode:
            super().__init__(filename, read_mode=True)
            return
        try:
            with open(filename, "a+b") as handle:
                size = os.fstat(handle.fileno()).st_size
                try:
                    os.posix_fallocate(handle.fileno(), 0, max(size, _INITIAL_MMAP_SIZE))
                except OSError:
                    if size == 0:  # an empty file would break /metrics (its reader needs the header)
                        os.unlink(filename)
                    raise
        except OSError as exc:
            self._in_memory(filename, exc)
            return
        super().__init__(filename)

    def _in_memory(self, filename: str, exc: OSError) -> None:
        """The upstream __init__ on an anonymous map: the same layout, nothing on disk."""
        log.warning("cannot make the metrics file %s (%s): this process's samples stay in memory", filename, exc)
        self.detached = True
        self._f = None
        self._fname = filename
        self._capacity = _INITIAL_MMAP_SIZE
        self._m = mmap.mmap(-1, self._capacity)
        self._positions: dict[str, int] = {}
        self._used = 8
        self._m[0:4] = struct.pack(b"i", self._used)

    def _init_value(self, key: str) -> None:
        encoded = key.encode("utf-8")
        needed = self._used + len(encoded) + _ENTRY_OVERHEAD
        capacity = self._capacity
        while needed > capacity:
            capacity *= 2
        if capacity != self._capacity:
            if self.detached:
                grown = mmap.mmap(-1, capacity)
                grown[: self._capacity] = self._m[: self._capacity]
                self._m, self._capacity = grown, capacity
            else:
                os.posix_fallocate(self._f.fileno(), 0, capacity)  # ENOSPC here, before any page is touched
        super()._init_value(key)

    def write_value(self, key: str, value: float, timestamp: float) -> None:
        try:
            super().write_value(key, value, timestamp)
        except OSError as exc:
            _skipped(self._fname, exc)

    def read_value(self, key: str) -> Any:
        try:
            return super().read_value(key)
        except OSError as exc:
            _skipped(self._fname, exc)
            return 0.0, 0.0

    def close(self) -> None:
        if self.detached:
            if self._m is not None:
                self._m.close()
                self._m = None
            return
        super().close()


_warned: set[str] = set()


def _skipped(filename: str, exc: OSError) -> None:
    if filename not in _warned:  # once per file: a full disk would otherwise log at every request
        _warned.add(filename)
        why = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else str(exc)
        log.warning("a new metric series is not in %s yet (%s): written once there is room", filename, why)


def install() -> None:
    """Make prometheus_client's multiprocess values use PreallocatedMmapedDict (before any metric exists)."""
    values.MmapedDict = PreallocatedMmapedDict  # type: ignore[misc]
