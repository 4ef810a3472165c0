"""A served tile set that follows its file: reopened when the file is replaced or changed, one version at a time.

Why: a server holds an archive open for days while ``geopix tiles --overwrite`` renames a new one
over it, a sync rewrites it in place, or a copy is cut short.  Every request first compares the
path's identity (device, inode, size, mtime) with the open version's and reopens on a difference,
so all routes switch together; after reading it checks that the version's own bytes did not change
under it (a write in place).  While the file on disk does not open as a tile set, requests get
:class:`~geopix.errors.TilesetChangedError` (the server answers 503) until it does.

A request holds its version through a :class:`Lease`, so a replaced version is closed only when
its last reader is done.  Methods block (``stat``, the reopen): call them off an event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from geopix.errors import TilesetChangedError
from geopix.tilesets.base import TileSet

log = logging.getLogger(__name__)


class Lease:
    """One version of the tile set, held open while a request reads it."""

    def __init__(self, version: _Version) -> None:
        self._version = version
        self.tileset = version.tileset
        self.identity = version.identity
        self.number = version.number
        self._released = False

    def unchanged(self) -> bool:
        """Whether the bytes this version reads are still the ones it opened (no write in place since)."""
        return self.identity is None or self.tileset.snapshot() == self.identity

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._version.release()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Version:
    def __init__(self, tileset: TileSet, identity: object, number: int) -> None:
        self.tileset, self.identity, self.number = tileset, identity, number
        self._users = 0
        self._retired = False
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            close = self._retired and self._users == 0
        if close:
            self.tileset.close()

    def retire(self) -> None:
        with self._lock:
            self._retired = True
            close = self._users == 0
        if close:
            self.tileset.close()


class LiveTileSet:
    """``opener(path)``'s tile set, reopened whenever ``identity(path)`` changes; ``None`` identity: never."""

    def __init__(
        self,
        path: str | Path,
        opener: Callable[[str | Path], TileSet],
        tileset: TileSet | None = None,
    ) -> None:
        self.path = path
        self._opener = opener
        first = tileset if tileset is not None else opener(path)
        local = isinstance(path, Path) or ("://" not in path and not path.startswith("/vsi"))
        identity = first.snapshot() if local else None
        self._watched = identity is not None
        self._identity_of = type(first).identity_of
        self._current: _Version | None = _Version(first, identity, 1)
        self._failed: tuple[object, str] | None = None  # (the identity that failed to open, why)
        self._lock = threading.Lock()
        self.versions = 1  # versions opened so far (the first included)

    @property
    def watched(self) -> bool:
        """Whether the set is a local file or folder followed for changes (a URL is not)."""
        return self._watched

    @property
    def kind(self) -> str:
        return self._current.tileset.kind if self._current else ""

    def lease(self) -> Lease:
        """The current version, reopened first if the file changed; raises ``TilesetChangedError`` while it
        does not open."""
        if self._watched:
            on_disk = self._identity_of(self.path)
            current = self._current
            if current is None or on_disk != current.identity:
                self._reopen(on_disk)
        with self._lock:
            version = self._current
            if version is None:
                raise TilesetChangedError(self._failed[1] if self._failed else f"{self.path} is not open")
            version.acquire()
        return Lease(version)

    def _reopen(self, on_disk: object) -> None:
        with self._lock:  # one reopen at a time; others wait and then see its result
            current = self._current
            if current is not None and current.identity == on_disk:
                return
            if self._failed is not None and self._failed[0] == on_disk:
                return  # the same broken file as last time: don't reopen it on every request
            try:
                tileset = self._opener(self.path)
                identity = tileset.snapshot()
            except Exception as exc:  # whatever the new file is, the server answers 503 and keeps running
                why = f"{self.path} changed and does not open as a tile set: {exc}"
                if self._failed is None or self._failed[1] != why:
                    log.warning("%s; answering 503 until it does", why)
                self._failed = (on_disk, why)
                self._current = None
                if current is not None:
                    current.retire()
                return
            self.versions += 1
            self._current = _Version(tileset, identity, self.versions)
            self._failed = None
            log.info("%s changed: reopened (version %d)", self.path, self.versions)
        if current is not None:
            current.retire()

    def close(self) -> None:
        with self._lock:
            current, self._current = self._current, None
        if current is not None:
            current.retire()
