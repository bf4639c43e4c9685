"""The LMDB environment beside the segments: the only module that imports ``lmdb``.

Holds what the log cannot find fast: the topic catalogue, and (added by the
features that need them) group offsets and leases, correlation ids, dedupe
ids and stream versions. One environment per directory per process; reopened
after ``fork()``; grown when full; stale reader slots of dead processes are
cleared on open. ``lmdb`` exceptions never leave this module.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lmdb

from .._limits import (
    HASHED_ID_BYTES,
    LMDB_INITIAL_MAP_BYTES,
    LMDB_MAX_KEY_BYTES,
    LMDB_MAX_READERS,
)
from ..errors import StreamlogError

_MAX_DBS = 64


def key_for(raw: bytes) -> bytes:
    """An LMDB key for an id of any length: ids over LMDB's 511-byte limit are hashed."""
    if len(raw) <= LMDB_MAX_KEY_BYTES:
        return raw
    return b"#" + hashlib.blake2b(raw, digest_size=HASHED_ID_BYTES).digest()


class Meta:
    """The directory's LMDB environment.

    Thread-safe: LMDB serialises write transactions (across processes too);
    ``write()`` grows the map and retries when it is full. Transactions are
    kept short: callers do their work inside the ``with`` body only.
    """

    def __init__(self, path: str, durability: str) -> None:
        self.path = path
        self.durability = durability
        self._lock = threading.Lock()
        self._dbs: dict[str, Any] = {}
        self._pid = os.getpid()
        self._open()

    def _open(self) -> None:
        os.makedirs(self.path, exist_ok=True)
        size = LMDB_INITIAL_MAP_BYTES
        data = os.path.join(self.path, "data.mdb")
        if os.path.exists(data):
            size = max(size, os.path.getsize(data) * 2)
        try:
            self.env = lmdb.open(
                self.path, map_size=size, max_dbs=_MAX_DBS, max_readers=LMDB_MAX_READERS,
                sync=self.durability == "always", metasync=self.durability == "always",
                lock=True, subdir=True, readahead=False,
            )
            self.env.reader_check()  # clear reader slots left by dead processes
        except lmdb.Error as e:
            raise _translate(e, self.path) from e
        self._dbs.clear()
        self._pid = os.getpid()

    def _ensure_process(self) -> None:
        if os.getpid() != self._pid:  # after fork(): the parent's handle is unusable here
            with self._lock:
                if os.getpid() != self._pid:
                    self._open()

    def db(self, name: str):
        """Handle of a named database (created on first use)."""
        self._ensure_process()
        h = self._dbs.get(name)
        if h is None:
            with self._lock:
                h = self._dbs.get(name)
                if h is None:
                    try:
                        h = self.env.open_db(name.encode(), create=True)
                    except lmdb.MapFullError:
                        self._grow()
                        h = self.env.open_db(name.encode(), create=True)
                    except lmdb.Error as e:
                        raise _translate(e, self.path) from e
                    self._dbs[name] = h
        return h

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A read-only transaction (readers never block and are never blocked)."""
        self._ensure_process()
        try:
            with self.env.begin(write=False) as txn:
                yield txn
        except lmdb.Error as e:
            raise _translate(e, self.path) from e

    def write(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(txn)`` in a write transaction and commit; returns what fn returns.

        ``fn`` may run more than once (after the map grows), so it must only
        touch the transaction.
        """
        self._ensure_process()
        for _ in range(8):
            try:
                with self.env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                self._grow()
            except lmdb.Error as e:
                raise _translate(e, self.path) from e
        raise StreamlogError(f"{self.path}: LMDB map could not grow enough")

    def _grow(self) -> None:
        with self._lock:
            info = self.env.info()
            self.env.set_mapsize(info["map_size"] * 2)

    def sync(self) -> None:
        """Flush committed transactions to disk (the interval syncer and flush call it)."""
        self._ensure_process()
        try:
            self.env.sync(True)
        except lmdb.Error as e:
            raise _translate(e, self.path) from e

    def close(self) -> None:
        if os.getpid() == self._pid:
            try:
                self.env.close()
            except lmdb.Error:
                pass


def _translate(e: Exception, path: str) -> Exception:
    if isinstance(e, lmdb.DiskError | lmdb.ReadonlyError) or getattr(e, "errno", None):
        err = getattr(e, "errno", None) or 5
        return OSError(err, f"{path}: {e}")
    return StreamlogError(f"{path}: LMDB: {e}")
