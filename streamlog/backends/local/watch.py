"""Awaitable waits on the embedded engine's futex words, with no thread per waiter.

A topic's wake-up word (``_ext.Notifier``, in the topic's shared ``notify``
file) and a partition's ``notify_seq`` (in its control block) are 32-bit
futex words that every append bumps. The blocking waits sleep on one word in
one thread. :func:`wait_async` instead lets any number of coroutines, on any
number of event loops, wait on any number of words:

* One watcher thread per process sleeps in the kernel on every watched word
  at once with ``futex_waitv`` (Linux 5.16), plus a private word of its own
  that is bumped when a new word must be watched or one dropped. The syscall
  takes at most 128 words, so each watcher holds up to 127 of them and a
  further watcher thread starts for every further 127 distinct words.
* Waiters on the same word share one entry. When the watcher wakes, it hands
  each event loop that has waiters on a moved word one callback
  (``loop.call_soon_threadsafe``); that callback, on the loop's own thread,
  resolves every waiter of the word whose ``seen`` differs from the word now.
  The watcher's work per wake-up is per word and loop, not per waiter.
* The timeout is a ``loop.call_later`` on the waiter's loop. Whatever ends the
  wait (a change, the timeout, a cancellation of the awaiting task), the
  waiter's registration is removed before the coroutine returns or raises;
  a word without waiters is dropped from the watcher's table at once, and the
  watcher is woken to stop sleeping on it.
* While it sleeps the watcher raises each word's waiter count (the 32-bit word
  after it), as a blocking waiter does, so appenders issue the wake-up. A word
  mapped read-only (a read-only store) cannot be counted; while it has one, the
  watcher sleeps in slices of at most 50 ms and looks between them.

Why the syscall is made from the compiled extension, not through ``ctypes``:
the waiter counts must be raised and lowered with atomic read-modify-write
instructions on the shared mapping (appenders in other processes update them
concurrently), which ``ctypes`` cannot do; the extension does both and calls
``futex_waitv`` with the GIL released.

On a kernel without ``futex_waitv`` (ENOSYS, before 5.16) each distinct word
gets a thread of its own that sleeps with the blocking wait of that word, in
slices of at most 0.25 s so that it notices when its last waiter has gone:
still no thread per waiter, but one per watched word.

Fork: a child process starts with an empty table (its parent's watcher
threads do not exist in it).
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from streamlog import _ext

__all__ = ["wait_async"]

# futex_waitv takes up to this many words; one is the watcher's own.
_WORDS_PER_WATCHER = _ext.WAITV_MAX - 1
# A watcher with no words left exits after this long (a new one starts on demand).
_IDLE_EXIT_S = 5.0
# Sleep slice while a watched word cannot count its waiter (a read-only mapping).
_UNCOUNTED_SLICE_S = 0.05
# Sleep slice of a fallback (one word per thread) watcher.
_FALLBACK_SLICE_S = 0.25
# Waiters resolved per loop callback: resolving ten thousand at once would hold
# the loop for milliseconds. In asyncio's debug mode each resolution records a
# stack (tens of microseconds), hence far fewer per callback there.
_RESOLVE_CHUNK = 512
_RESOLVE_CHUNK_DEBUG = 16


def _describe(source: Any) -> tuple[int, bool, Callable[[], int]] | None:
    """(address, counted, read) of a source's futex word, or None when it has none.

    Sources: ``_ext.Notifier`` (a topic's word) and ``_ext.Control`` (a
    partition's ``notify_seq``)."""
    if isinstance(source, _ext.Notifier):
        return source.address, bool(source.mapping.writable), lambda: source.seq
    if isinstance(source, _ext.Control):
        return source.notify_address, not source.read_only, lambda: source.notify_seq
    return None


def _released(source: Any) -> bool:
    """The store let go of the word's file (it closed): its waiters must look again."""
    m = getattr(source, "mapping", None)
    return bool(m is not None and m.released)


_Futures = dict["asyncio.Future[bool]", None]


class _Word:
    """One watched futex word and its waiters, by loop and by the value they saw."""

    __slots__ = ("address", "source", "counted", "read", "value", "loops", "watcher")

    def __init__(self, address: int, source: Any, counted: bool, read: Callable[[], int],
                 value: int, watcher: _Watcher) -> None:
        self.address = address
        self.source = source  # keeps the mapping (and so the address) alive
        self.counted = counted
        self.read = read
        self.value = value  # what the watcher last saw (fires when the word differs)
        # loop -> seen -> the waiters' futures (a dict used as an ordered set)
        self.loops: dict[asyncio.AbstractEventLoop, dict[int, _Futures]] = {}
        self.watcher = watcher


class _Watcher:
    """A thread sleeping on up to ``capacity`` words (plus its own) at once."""

    def __init__(self, registry: _Registry, capacity: int, fallback: bool) -> None:
        self.registry = registry
        self.capacity = capacity
        self.fallback = fallback
        self.words: dict[int, _Word] = {}
        self.alive = True
        self.passes = 0  # completed looks at the table (a barrier for tests)
        self._ctl = _ext.Notifier(_ext.Mapping(-1, 8, True, True))  # private, anonymous
        self.thread = threading.Thread(target=self._run, name="streamlog-watch", daemon=True)

    def poke(self) -> None:
        """Make the watcher look at its table again (a word was added or dropped)."""
        self._ctl.notify()

    def _run(self) -> None:
        # Takes no lock while it looks at its table: a loop thread must never wait for
        # this thread (which may itself be waiting for a CPU or the GIL). Each read of
        # shared state below is one atomic step under the GIL; the order (own word
        # first, then the table, then each word's value, then its loops) is what
        # makes a registration that races a pass either seen by it or wake the sleep.
        reg = self.registry
        idle_since: float | None = None
        woken: _Word | None = None  # the word the last sleep was woken on
        while True:
            ctl_seen = self._ctl.seq
            words = tuple(self.words.values())
            if not words:
                now = time.monotonic()
                if idle_since is None:
                    idle_since = now
                if self.fallback or now - idle_since >= _IDLE_EXIT_S:
                    with reg.lock:
                        if not self.words:
                            self.alive = False
                            reg.watchers.remove(self)
                    if not self.alive:
                        self._passed()
                        return
                    continue
            else:
                idle_since = None
            posts: dict[asyncio.AbstractEventLoop, list[tuple[_Word, bool]]] = {}
            addrs: list[int] = []
            vals: list[int] = []
            counted: list[bool] = []
            for w in words:
                cur = w.read()
                # A wake-up on a word counts even when its value looks unmoved: a
                # store that closes bumps its words, then lets go of their files
                # (they read 0 from then on), and the waiters must look again.
                force = w is woken or _released(w.source)
                if cur != w.value or force:
                    w.value = cur
                    for loop in tuple(w.loops):
                        posts.setdefault(loop, []).append((w, force))
                addrs.append(w.address)
                vals.append(cur)
                counted.append(w.counted)
            self._passed()
            timeout = -1.0 if words else _IDLE_EXIT_S
            if not all(counted):
                timeout = _UNCOUNTED_SLICE_S
            addrs.append(self._ctl.address)
            vals.append(ctl_seen)
            counted.append(True)
            # Last before the sleep: a woken loop thread wants the GIL this one holds.
            for loop, moved in posts.items():
                try:
                    loop.call_soon_threadsafe(reg.fire, loop, moved)
                except RuntimeError:  # the loop is closed: its waiters can never run
                    reg.forget_loop(loop)
            woken = None
            if self.fallback:  # one word: its own blocking wait (GIL released)
                if words and words[0].source.wait(vals[0], _FALLBACK_SLICE_S):
                    woken = words[0]
                del words
                continue
            rc = _ext.futex_waitv(addrs, vals, counted, timeout)
            if 0 <= rc < len(words):
                woken = words[rc]
            del words  # the sources stayed alive for the sleep

    def _passed(self) -> None:
        with self.registry.passes:
            self.passes += 1
            self.registry.passes.notify_all()


class _Registry:
    """Every watched word of this process, and the watcher threads sleeping on them."""

    def __init__(self, fallback: bool) -> None:
        self.lock = threading.Lock()
        self.passes = threading.Condition()  # a watcher finished a look at its table
        self.words: dict[int, _Word] = {}
        self.watchers: list[_Watcher] = []
        self.fallback = fallback

    def add(self, source: Any, address: int, counted: bool, read: Callable[[], int], seen: int,
            fut: asyncio.Future[bool], loop: asyncio.AbstractEventLoop) -> _Word | None:
        """Register ``fut`` as waiting for the word to differ from ``seen``; None (and
        nothing registered) when it already differs."""
        poke = None
        with self.lock:
            w = self.words.get(address)
            if w is None:
                watcher = self._watcher_with_room()
                w = _Word(address, source, counted, read, seen, watcher)
                watcher.words[address] = w
                self.words[address] = w
                poke = watcher
            w.loops.setdefault(loop, {}).setdefault(seen, {})[fut] = None
        if poke is not None:
            poke.poke()
        if read() != seen:
            # Moved since the caller looked: perhaps after a watcher's pass read this
            # word's loops but before the waiter was in them, so nothing would fire.
            self.remove(w, loop, seen, fut)
            return None
        return w

    def _watcher_with_room(self) -> _Watcher:
        for watcher in self.watchers:
            if watcher.alive and len(watcher.words) < watcher.capacity:
                return watcher
        watcher = _Watcher(self, 1 if self.fallback else _WORDS_PER_WATCHER, self.fallback)
        self.watchers.append(watcher)
        watcher.thread.start()
        return watcher

    def remove(self, w: _Word, loop: asyncio.AbstractEventLoop, seen: int,
               fut: asyncio.Future[bool]) -> None:
        """Take ``fut`` out of the table (idempotent); drop the word when it was the last."""
        with self.lock:
            by_seen = w.loops.get(loop)
            if by_seen is None:
                return
            futs = by_seen.get(seen)
            if futs is None or fut not in futs:
                return  # already resolved by ``fire`` (which took it out)
            del futs[fut]
            if futs:
                return
            del by_seen[seen]
            if by_seen:
                return
            del w.loops[loop]
            dropped = self._drop_if_empty(w)
        if dropped:
            w.watcher.poke()

    def _drop_if_empty(self, w: _Word) -> bool:
        if w.loops or self.words.get(w.address) is not w:
            return False
        del self.words[w.address]
        del w.watcher.words[w.address]
        return True

    def fire(self, loop: asyncio.AbstractEventLoop, words: list[tuple[_Word, bool]]) -> None:
        """On ``loop``'s thread: resolve its waiters whose word moved past what they saw
        (all of a word's waiters when ``force``: it was woken)."""
        ready: list[asyncio.Future[bool]] = []
        with self.lock:
            for w, force in words:
                by_seen = w.loops.get(loop)
                if not by_seen:
                    continue
                cur = w.read()
                for seen in [s for s in by_seen if force or s != cur]:
                    ready.extend(by_seen.pop(seen))
                if not by_seen:
                    del w.loops[loop]
                    # Out of the table; the watcher is not woken for it: it has just
                    # woken for this word and stops sleeping on it at its next wake-up
                    # (at the latest the word's next move), which saves a wake-up per
                    # resolved wait.
                    self._drop_if_empty(w)
        _resolve(ready, 0)  # the first chunk now: a wake-up costs the loop one callback

    def forget_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Drop every waiter of a closed loop."""
        dropped = []
        with self.lock:
            for w in list(self.words.values()):
                if w.loops.pop(loop, None) is not None and self._drop_if_empty(w):
                    dropped.append(w)
        for w in dropped:
            w.watcher.poke()

    def settle(self, timeout: float = 10.0) -> bool:
        """Wait until every watcher has looked at its table after this call (tests:
        after it, no word dropped before the call is still being slept on)."""
        with self.lock:
            want = {id(w): (w, w.passes + 1) for w in self.watchers}
        for w, _ in want.values():
            w.poke()
        deadline = time.monotonic() + timeout
        with self.passes:
            while any(w.alive and w.passes < p for w, p in want.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.passes.wait(left)
        return True

    def snapshot(self) -> dict[int, int]:
        """Watched word address -> number of waiters (tests, diagnostics)."""
        with self.lock:
            return {a: sum(len(f) for by_seen in w.loops.values() for f in by_seen.values())
                    for a, w in self.words.items()}


def _resolve(futs: list[asyncio.Future[bool]], start: int) -> None:
    """Resolve ``futs[start:]`` True, a chunk per loop callback."""
    if start >= len(futs):
        return
    loop = futs[0].get_loop()
    end = start + (_RESOLVE_CHUNK_DEBUG if loop.get_debug() else _RESOLVE_CHUNK)
    for fut in futs[start:end]:
        if not fut.done():
            fut.set_result(True)
    if end < len(futs):
        loop.call_soon(_resolve, futs, end)


def _timed_out(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


def _has_futex_waitv() -> bool:
    if os.environ.get("STREAMLOG_NO_FUTEX_WAITV"):
        return False
    return _ext.futex_waitv([], [], [], 0.0) != -errno.ENOSYS


_registry = _Registry(fallback=not _has_futex_waitv())


def _reset_after_fork() -> None:
    global _registry
    _registry = _Registry(fallback=_registry.fallback)


os.register_at_fork(after_in_child=_reset_after_fork)


async def wait_async(source: Any, seen: int, timeout: float | None) -> bool:
    """Wait, on the running event loop, until ``source``'s futex word differs from
    ``seen``: True as soon as it does, False once ``timeout`` seconds pass (None:
    no end). The awaitable twin of ``source.wait(seen, timeout)``.

    ``source`` is a topic's wake-up word (``_ext.Notifier``) or a partition's
    control block (``_ext.Control``); anything else with a ``seq`` and a blocking
    ``wait`` but no futex word (a read-only store's stand-in for a topic that
    has no wake-up file yet) is looked at every 50 ms. No thread is held for
    the waiter (see the module's docstring); cancelling the awaiting task
    removes its registration before the cancellation propagates. Like the
    blocking wait, it may return True early: callers look again.
    """
    loop = asyncio.get_running_loop()
    if timeout is not None and not timeout == timeout:  # NaN would never fire
        raise ValueError("timeout must be a number of seconds or None, not NaN")
    desc = _describe(source)
    if desc is None:
        cur = source.seq
        if cur != seen:
            return True
        if timeout is not None and timeout <= 0:
            return False
        await asyncio.sleep(_UNCOUNTED_SLICE_S if timeout is None
                            else min(timeout, _UNCOUNTED_SLICE_S))
        return bool(source.seq != seen)
    address, counted, read = desc
    seen &= 0xFFFFFFFF
    if read() != seen or _released(source):
        return True
    if timeout is not None and timeout <= 0:
        return False
    fut: asyncio.Future[bool] = loop.create_future()
    reg = _registry
    w = reg.add(source, address, counted, read, seen, fut, loop)
    if w is None:
        return True
    timer = None if timeout is None else loop.call_later(timeout, _timed_out, fut)
    try:
        return await fut
    finally:
        if timer is not None:
            timer.cancel()
        reg.remove(w, loop, seen, fut)
