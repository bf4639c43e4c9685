"""The LMDB environment beside the segments: the only module that imports ``lmdb``.

Holds what the log cannot find fast: the topic catalogue, and (added by the
features that need them) group offsets and leases, correlation ids, dedupe
ids and stream versions. One environment per directory per process; reopened
after ``fork()``; grown when full; stale reader slots of dead processes are
cleared on open. ``lmdb`` exceptions never leave this module.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lmdb

from streamlog._limits import (
    HASHED_ID_BYTES,
    LMDB_INITIAL_MAP_BYTES,
    LMDB_MAX_KEY_BYTES,
    LMDB_MAX_READERS,
)
from streamlog.errors import ReadOnlyStore, StreamlogError

_MAX_DBS = 64


def key_for(raw: bytes) -> bytes:
    """An LMDB key for an id of any length: ids over LMDB's 511-byte limit are hashed."""
    if len(raw) <= LMDB_MAX_KEY_BYTES:
        return raw
    return b"#" + hashlib.blake2b(raw, digest_size=HASHED_ID_BYTES).digest()


class _SharedEnv:
    """One process's LMDB environment for a directory, shared by every Log on it."""

    def __init__(self, env, pid: int, synced: bool, read_only: bool = False) -> None:
        self.env = env  # None: a read-only open of a store that has no LMDB files yet
        self.pid = pid
        self.synced = synced  # opened with sync=True (commits fsync)
        self.read_only = read_only
        self.refs = 0
        self.dbs: dict[str, Any] = {}
        self.lock = threading.Lock()


# LMDB allows one environment per file per process (its locks are per process),
# so every Log of this process on one directory shares one environment. After
# fork() the inherited one is closed in the child and opened afresh.
_ENVS: dict[str, _SharedEnv] = {}
_ENVS_LOCK = threading.Lock()


class _ForkGate:
    """Counts this process's LMDB calls in progress so that fork() waits for them.

    A child must close the environment it inherited before it can open the
    store again, and py-lmdb's close waits for every call that was in
    progress (an ``env.sync()``, a write transaction) to end: in the child,
    the threads making them do not exist, so it would wait forever. fork()
    therefore waits until no call is in progress and none starts until it
    is done. Nested calls of one thread never wait.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._active = 0
        self._forking = False
        self._local = threading.local()

    def __enter__(self) -> None:
        local = self._local
        depth = getattr(local, "depth", 0)
        self._lock.acquire()
        while self._forking and depth == 0:
            self._cond.wait()
        self._active += 1
        self._lock.release()
        local.depth = depth + 1

    def __exit__(self, *exc) -> None:
        self._local.depth -= 1
        self._lock.acquire()
        self._active -= 1
        if self._forking:
            self._cond.notify_all()
        self._lock.release()

    def before_fork(self) -> None:
        mine = getattr(self._local, "depth", 0)  # a fork from inside a call: skip ours
        self._lock.acquire()  # held through fork(): no call starts meanwhile
        self._forking = True
        while self._active > mine:
            self._cond.wait()

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._lock.release()


_GATE = _ForkGate()


# This process's id, kept current across fork(): every transaction checks it (an
# inherited environment must be reopened), and getpid() is a system call.
_PID = os.getpid()


def _reinit_locks_after_fork() -> None:
    # A thread of the parent may have held these at fork(): the child has no
    # such thread, so the copies would stay locked forever.
    global _ENVS_LOCK, _GATE, _PID
    _PID = os.getpid()
    _ENVS_LOCK = threading.Lock()
    _GATE = _ForkGate()
    for shared in _ENVS.values():
        shared.lock = threading.Lock()


os.register_at_fork(before=lambda: _GATE.before_fork(),
                    after_in_parent=lambda: _GATE.after_fork_in_parent(),
                    after_in_child=_reinit_locks_after_fork)


def _acquire(path: str, durability: str, read_only: bool = False) -> _SharedEnv:
    real = os.path.realpath(path)
    with _GATE, _ENVS_LOCK:
        shared = _ENVS.get(real)
        if shared is not None and shared.pid != os.getpid():
            try:  # inherited through fork(): unusable here, release our copy
                if shared.env is not None:
                    shared.env.close()
            except lmdb.Error:
                pass
            del _ENVS[real]
            shared = None
        if shared is not None and shared.read_only and not read_only:
            # One environment per file per process (LMDB): a read-only one cannot
            # take writes, and a second one beside it would break LMDB's locks.
            raise StreamlogError(f"{os.path.dirname(path)} is open read-only in this process: "
                                 "close that store before opening it for writing")
        if shared is None and read_only:
            shared = _SharedEnv(_open_read_only(path), os.getpid(), False, read_only=True)
            _ENVS[real] = shared
        if shared is None:
            os.makedirs(path, exist_ok=True)
            size = LMDB_INITIAL_MAP_BYTES
            data = os.path.join(path, "data.mdb")
            if os.path.exists(data):
                size = max(size, os.path.getsize(data) * 2)
            synced = durability == "always"
            try:
                env = lmdb.open(
                    path, map_size=size, max_dbs=_MAX_DBS, max_readers=LMDB_MAX_READERS,
                    sync=synced, metasync=synced, lock=True, subdir=True, readahead=False,
                )
                env.reader_check()  # clear reader slots left by dead processes
            except lmdb.Error as e:
                raise _translate(e, path) from e
            shared = _SharedEnv(env, os.getpid(), synced)
            _ENVS[real] = shared
        shared.refs += 1
        return shared


def _open_read_only(path: str):
    """The LMDB environment of ``path`` opened read-only, or None when it has no files.

    Nothing in the directory is created or written. LMDB's lock file
    (lock.mdb) is the shared memory where readers register: it is used only
    while another process has the store open (its writers must then see this
    reader so as not to reuse pages under it); with no other process there
    is no writer to see, and the file is left untouched.
    """
    if not os.path.isfile(os.path.join(path, "data.mdb")):
        return None
    size = max(LMDB_INITIAL_MAP_BYTES, os.path.getsize(os.path.join(path, "data.mdb")) * 2)
    try:
        return lmdb.open(path, map_size=size, max_dbs=_MAX_DBS, max_readers=LMDB_MAX_READERS,
                         readonly=True, lock=_held_by_another_process(path), create=False,
                         subdir=True, readahead=False)
    except lmdb.Error as e:
        raise _translate(e, path) from e


# struct flock (x86-64 and aarch64 Linux): l_type, l_whence, l_start, l_len, l_pid.
_FLOCK = struct.Struct("hhqqi4x")


def _held_by_another_process(path: str) -> bool:
    """True when another process has the LMDB environment open (LMDB keeps an fcntl
    lock on byte 0 of lock.mdb for as long as a process has it open)."""
    try:
        fd = os.open(os.path.join(path, "lock.mdb"), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        probe = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0)
        l_type = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, probe))[0]
        return l_type != fcntl.F_UNLCK
    except OSError:
        return True  # cannot tell: register as a reader, the safe choice
    finally:
        os.close(fd)


def _release(path: str, shared: _SharedEnv) -> None:
    real = os.path.realpath(path)
    with _GATE, _ENVS_LOCK:
        shared.refs -= 1
        if shared.refs <= 0 and _ENVS.get(real) is shared:
            del _ENVS[real]
            if shared.pid == os.getpid() and shared.env is not None:
                try:
                    shared.env.close()
                except lmdb.Error:
                    pass


class Meta:
    """The directory's LMDB environment, as one Log uses it.

    Thread-safe: LMDB serialises write transactions (across processes too);
    ``write()`` grows the map and retries when it is full. Transactions are
    kept short: callers do their work inside the ``with`` body only.
    """

    def __init__(self, path: str, durability: str, read_only: bool = False) -> None:
        self.path = path
        self.durability = durability
        self.read_only = read_only
        self._closed = False
        self._shared = _acquire(path, durability, read_only)

    @property
    def env(self):
        return self._env()

    def _env(self):
        if self._shared.pid != _PID:  # after fork(): reopen in this process
            with self._shared.lock:
                if self._shared.pid != os.getpid():
                    self._shared = _acquire(self.path, self.durability, self.read_only)
        return self._shared.env

    def db(self, name: str):
        """Handle of a named database (created on first use)."""
        env = self._env()
        shared = self._shared
        h = shared.dbs.get(name)
        if h is None:
            if env is None or self.read_only:
                return self._db_read_only(env, name)
            with shared.lock:
                h = shared.dbs.get(name)
                if h is None:
                    try:
                        h = _open_db(env, name)
                    except lmdb.MapFullError:
                        self._grow()
                        h = _open_db(env, name)
                    except lmdb.Error as e:
                        raise _translate(e, self.path) from e
                    shared.dbs[name] = h
        return h

    def _db_read_only(self, env, name: str):
        """A named database's handle without creating it; ``_MISSING`` when it does not
        exist (reads of it then find nothing)."""
        shared = self._shared
        if env is None:
            return _MISSING
        with shared.lock:
            h = shared.dbs.get(name)
            if h is not None:
                return h
            try:
                with _GATE:  # (py-lmdb keeps the handle only when it makes the txn)
                    h = env.open_db(name.encode(), create=False)
            except lmdb.NotFoundError:
                return _MISSING  # not cached: a writer may create it later
            except lmdb.Error as e:
                raise _translate(e, self.path) from e
            shared.dbs[name] = h
            return h

    def db_in(self, txn, name: str):
        """Handle of a named database for use inside ``txn``, an open write transaction.

        For hooks that run inside another write transaction (topic deletion):
        ``db()`` would begin a second write transaction to create a database
        this process has not opened yet, and LMDB's writer lock is not
        reentrant. A handle opened here is not cached (it would die with an
        aborted ``txn``).
        """
        h = self._shared.dbs.get(name) if self._shared.pid == os.getpid() else None
        if h is not None:
            return h
        try:
            return self._env().open_db(name.encode(), txn=txn, create=True)
        except lmdb.Error as e:
            raise _translate(e, self.path) from e

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A read-only transaction (readers never block and are never blocked)."""
        env = self._env()
        if env is None:
            yield _ReadOnlyTxn(None)
            return
        try:
            with _GATE, env.begin(write=False) as txn:
                yield _ReadOnlyTxn(txn) if self.read_only else txn
        except lmdb.Error as e:
            raise _translate(e, self.path) from e

    def write(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(txn)`` in a write transaction and commit; returns what fn returns.

        ``fn`` may run more than once (after the map grows), so it must only
        touch the transaction.
        """
        if self.read_only:
            raise ReadOnlyStore(f"{os.path.dirname(self.path)} is open read-only: "
                                "nothing can be written")
        env = self._env()
        for _ in range(8):
            try:
                with _GATE:
                    with env.begin(write=True) as txn:
                        result = fn(txn)
                    if self.durability == "always" and not self._shared.synced:
                        env.sync(True)  # the environment was opened by a less durable Log
                return result
            except lmdb.MapFullError:
                self._grow()
            except lmdb.Error as e:
                raise _translate(e, self.path) from e
        raise StreamlogError(f"{self.path}: LMDB map could not grow enough")

    def _grow(self) -> None:
        with _GATE, self._shared.lock:
            env = self._shared.env
            env.set_mapsize(env.info()["map_size"] * 2)

    def sync(self) -> None:
        """Flush committed transactions to disk (the interval syncer and flush call it)."""
        if self.read_only:
            return  # nothing was written
        try:
            env = self._env()
            with _GATE:
                env.sync(True)
        except lmdb.Error as e:
            raise _translate(e, self.path) from e

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release(self.path, self._shared)


# The handle of a named database a read-only open did not find: reads of it
# find nothing (see _ReadOnlyTxn).
_MISSING = object()


class _EmptyCursor:
    def set_range(self, key) -> bool:
        return False

    def first(self) -> bool:
        return False

    def __iter__(self):
        return iter(())


class _ReadOnlyTxn:
    """A read transaction of a read-only open (``txn`` None: no LMDB files at all),
    where a database that does not exist reads as empty."""

    def __init__(self, txn) -> None:
        self._txn = txn

    def get(self, key, default=None, db=None):
        if db is _MISSING or self._txn is None:
            return default
        return self._txn.get(key, default, db=db)

    def cursor(self, db=None):
        if db is _MISSING or self._txn is None:
            return _EmptyCursor()
        return self._txn.cursor(db=db)

    def __getattr__(self, name):
        if self._txn is None:
            raise ReadOnlyStore("the store has no catalogue yet")
        return getattr(self._txn, name)


def _open_db(env, name: str):
    """Open (creating) a named database in a write transaction of our own.

    ``env.open_db(create=True)`` without a transaction waits for LMDB's writer
    lock while holding the GIL: if another thread of this process is inside a
    write transaction running Python code, neither can go on. Beginning the
    transaction explicitly waits with the GIL released.
    """
    with _GATE, env.begin(write=True) as txn:
        return env.open_db(name.encode(), txn=txn, create=True)


def _translate(e: Exception, path: str) -> Exception:
    if isinstance(e, lmdb.DiskError | lmdb.ReadonlyError) or getattr(e, "errno", None):
        err = getattr(e, "errno", None) or 5
        return OSError(err, f"{path}: {e}")
    return StreamlogError(f"{path}: LMDB: {e}")


class Tx:
    """A key-value view of one LMDB transaction, limited to one named database."""

    def __init__(self, txn, db) -> None:
        self._txn = txn
        self._db = db

    def raw(self):
        """The LMDB transaction and database handle, for callers that walk keys with a
        cursor (keys they use must stay under LMDB's 511-byte limit: no hashing there)."""
        return self._txn, self._db

    def get(self, key: bytes) -> bytes | None:
        v = self._txn.get(key_for(key), db=self._db)
        return None if v is None else bytes(v)

    def put(self, key: bytes, value: bytes) -> None:
        self._txn.put(key_for(key), value, db=self._db)

    def delete(self, key: bytes) -> bool:
        return self._txn.delete(key_for(key), db=self._db)

    def scan(self, prefix: bytes = b"", limit: int | None = None) -> list[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with ``prefix``, in key order (the first
        ``limit`` of them when given)."""
        out: list[tuple[bytes, bytes]] = []
        cur = self._txn.cursor(db=self._db)
        if not cur.set_range(prefix):
            return out
        for k, v in cur:
            if not k.startswith(prefix) or (limit is not None and len(out) >= limit):
                break
            out.append((bytes(k), bytes(v)))
        return out

    def delete_prefix(self, prefix: bytes) -> int:
        """Delete every key starting with ``prefix``; returns how many."""
        keys = [k for k, _ in self.scan(prefix)]
        for k in keys:
            self._txn.delete(k, db=self._db)
        return len(keys)


class KV:
    """A named key-value namespace in the directory's LMDB environment.

    The state store that views and groups use (a JetStream backend maps it
    to a KV bucket). Keys over 511 bytes are hashed. Thread- and
    process-safe; ``transact`` is atomic and serialised across processes.
    """

    def __init__(self, meta: Meta, name: str) -> None:
        self._meta = meta
        self.name = name

    def get(self, key: bytes) -> bytes | None:
        db = self._meta.db(self.name)  # before the txn: a first open creates the db
        with self._meta.read() as txn:
            v = txn.get(key_for(key), db=db)
            return None if v is None else bytes(v)

    def scan(self, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        db = self._meta.db(self.name)  # before the txn: a first open creates the db
        with self._meta.read() as txn:
            return Tx(txn, db).scan(prefix)

    def put(self, key: bytes, value: bytes) -> None:
        self.transact(lambda tx: tx.put(key, value))

    def delete(self, key: bytes) -> bool:
        return self.transact(lambda tx: tx.delete(key))

    def transact(self, fn: Callable[[Tx], Any]) -> Any:
        """Run ``fn(tx)`` in one write transaction (it may run again if the map grows)."""
        db = self._meta.db(self.name)
        return self._meta.write(lambda txn: fn(Tx(txn, db)))

    def transact_many(self, names: list[str], fn: Callable[..., Any]) -> Any:
        """Run ``fn(tx_a, tx_b, ...)`` over several namespaces in one write transaction."""
        dbs = [self._meta.db(n) for n in names]
        return self._meta.write(lambda txn: fn(*(Tx(txn, d) for d in dbs)))
