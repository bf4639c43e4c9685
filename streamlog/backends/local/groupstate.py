"""The state of one consumer group on one partition, as pure data: no I/O, no clock.

A group's progress on a partition is a *window* of offsets ``[committed, next)``
covered, in order and without gaps, by *runs*: maximal ranges of offsets that
share one state. Everything below ``committed`` is done (acked, dead-lettered,
skipped by ``seek`` or removed by retention); nothing at or above ``next`` was
ever handed out. A run is a list ``[lo, hi, owner, due_ms, count, error]``:

* ``owner is None``: acked (``due_ms``, ``count``, ``error`` unused);
* ``owner == FREE``: held by nobody (nacked, released by ``close``, revoked by an
  exclusive rewind, or skipped because its key was held); deliverable from
  ``due_ms`` on;
* ``owner`` a consumer name: leased to that consumer until ``due_ms`` (the lease
  deadline); once it passes the run is deliverable again from ``due_ms`` plus
  the backoff for ``count``; until someone takes it the old owner may still ack.

``count`` is how many times the run's records were delivered; ``error`` the last
error a ``nack`` gave. A poll leases a whole range of new offsets as one run, so
the state stays a handful of runs however many records are in flight; acks
split runs and merge them back; the acked prefix folds into ``committed``.

``key_shared`` groups also keep ``keys``: offset -> murmur2 hash of the key for
every keyed, unacked record in the window, so a key is known to be held without
reading records again. ``exclusive`` groups keep the partition's ``owner`` and
an ``epoch`` bumped at each change of owner.

The functions on a PartState (a whole window in memory) serve the operations
that look at every run; the ``*_store`` functions at the end run the shared
poll and the settles on the indexed layout in LMDB, entry by entry (no I/O
here either: the store object does it). docs/groups.md explains the
algorithms; tests/unit/test_groups_state.py and test_groups_layout.py prove
them. Not thread-safe: a PartState lives inside one LMDB write transaction.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

FREE = ""
FOREVER_MS = 1 << 62  # "no deadline": later than any wall-clock millisecond


class PartState:
    """One group's state on one partition (see the module docstring)."""

    __slots__ = ("committed", "next", "runs", "owner", "epoch", "redeliveries",
                 "dead_letters", "keys")

    def __init__(self, committed: int = 0) -> None:
        self.committed = committed
        self.next = committed
        self.runs: list[list] = []
        self.owner: str | None = None
        self.epoch = 0
        self.redeliveries = 0
        self.dead_letters = 0
        self.keys: dict[int, int] = {}

    def __repr__(self) -> str:
        return (f"PartState(committed={self.committed}, next={self.next}, runs={self.runs}, "
                f"owner={self.owner!r}, epoch={self.epoch})")


def decode(raw: bytes) -> PartState:
    """A PartState from the JSON value of the older layout (one value per partition)."""
    d = json.loads(raw)
    st = PartState.__new__(PartState)
    st.committed = d["c"]
    st.next = d["n"]
    st.runs = d["r"]
    st.owner = d.get("o")
    st.epoch = d.get("e", 0)
    st.redeliveries = d.get("rd", 0)
    st.dead_letters = d.get("dl", 0)
    k = d.get("k")
    st.keys = {o: h for o, h in k} if k else {}
    return st


def encode(st: PartState) -> bytes:
    """The JSON value of the older layout (stores written before the indexed one hold
    it; nothing writes it now but tests of that upgrade)."""
    d: dict = {"c": st.committed, "n": st.next, "r": st.runs}
    if st.owner is not None or st.epoch:
        d["o"] = st.owner
        d["e"] = st.epoch
    if st.redeliveries:
        d["rd"] = st.redeliveries
    if st.dead_letters:
        d["dl"] = st.dead_letters
    if st.keys:
        d["k"] = sorted(st.keys.items())
    return json.dumps(d, separators=(",", ":")).encode()


# ------------------------------------------------------------------ helpers
def backoff_ms(backoff: list[int] | None, count: int) -> int:
    """Delay before the (count+1)-th delivery: ``backoff[count-1]``, the last entry repeating."""
    if not backoff or count <= 0:
        return 0
    return backoff[min(count, len(backoff)) - 1]


def ready_at(run: Sequence[Any], backoff: list[int] | None) -> int:
    """When a run that is not acked may be delivered (again)."""
    if run[2] == FREE:
        return run[3]
    return run[3] + backoff_ms(backoff, run[4])


def to_ranges(offsets: list[int]) -> list[tuple[int, int]]:
    """Sorted, coalesced ``[lo, hi)`` ranges covering ``offsets`` (any order, repeats ok)."""
    s = sorted(offsets)
    n = len(s)
    if n and s[-1] - s[0] == n - 1 and (n == 1 or len(set(s)) == n):
        return [(s[0], s[-1] + 1)]  # the usual case: one poll's worth, contiguous
    out: list[tuple[int, int]] = []
    for o in sorted(set(s)):
        if out and out[-1][1] == o:
            out[-1] = (out[-1][0], o + 1)
        else:
            out.append((o, o + 1))
    return out


def merge(runs: list[list]) -> list[list]:
    """Coalesce adjacent runs in the same state; drop empty ones."""
    out: list[list] = []
    for r in runs:
        if r[0] >= r[1]:
            continue
        if out:
            q = out[-1]
            if q[1] == r[0] and q[2] == r[2] and (
                    r[2] is None or (q[3] == r[3] and q[4] == r[4] and q[5] == r[5])):
                out[-1] = [q[0], r[1], q[2], q[3], q[4], q[5]]
                continue
        out.append(r)
    return out


def fold(st: PartState) -> None:
    """Move the acked prefix of the window into ``committed``."""
    runs = st.runs
    i = 0
    while i < len(runs) and runs[i][2] is None:
        i += 1
    if i:
        st.committed = runs[i - 1][1]
        del runs[:i]
    if not runs:
        st.committed = st.next
    if st.keys:
        c = st.committed
        if any(o < c for o in st.keys):
            st.keys = {o: h for o, h in st.keys.items() if o >= c}


def clamp(st: PartState, start_offset: int, end_offset: int | None = None) -> bool:
    """Fit the state to the partition's ``[start_offset, end_offset)``.

    Records below the start (removed by retention) count as done. Positions
    past the end (recovery cut a torn tail below them) move back to it, so the
    records later appended at those offsets are delivered. True if it changed.
    """
    changed = False
    if end_offset is not None and st.next > end_offset:
        st.next = end_offset
        st.committed = min(st.committed, end_offset)
        runs = [r for r in st.runs if r[0] < end_offset]
        if runs and runs[-1][1] > end_offset:
            runs[-1] = [runs[-1][0], end_offset] + runs[-1][2:]
        st.runs = runs
        if st.keys:
            st.keys = {o: h for o, h in st.keys.items() if o < end_offset}
        changed = True
    if st.committed >= start_offset:
        return changed
    st.committed = start_offset
    if st.next <= start_offset:
        st.next = start_offset
        st.runs = []
    else:
        runs = [r for r in st.runs if r[1] > start_offset]
        if runs and runs[0][0] < start_offset:
            runs[0] = [start_offset] + runs[0][1:]
        st.runs = runs
    fold(st)
    if st.keys:
        st.keys = {o: h for o, h in st.keys.items() if o >= st.committed}
    return True


def seek(st: PartState, offset: int) -> None:
    """Move the group: offsets before ``offset`` are done, from ``offset`` on delivered anew."""
    st.committed = st.next = offset
    st.runs = []
    st.keys = {}


def pending_count(st: PartState) -> int:
    """Records of the window that are not acked (leased, waiting or free)."""
    return sum(r[1] - r[0] for r in st.runs if r[2] is not None)


def acked_count(st: PartState, start_offset: int = 0) -> int:
    """Acked records of the window at or above ``start_offset``."""
    n = 0
    for r in st.runs:
        if r[2] is None and r[1] > start_offset:
            n += r[1] - max(r[0], start_offset)
    return n


def apply(st: PartState, ranges: list[tuple[int, int]], change) -> list[tuple[int, int]]:
    """Give the parts of runs inside ``ranges`` the state ``change(run)`` returns.

    ``change(run)`` returns the new ``[owner, due_ms, count, error]`` or None to
    leave the run alone. Returns the ``[lo, hi)`` pieces that changed.
    """
    out: list[list] = []
    changed: list[tuple[int, int]] = []
    j, nr = 0, len(ranges)
    for run in st.runs:
        lo, hi = run[0], run[1]
        while j < nr and ranges[j][1] <= lo:
            j += 1
        if j >= nr or ranges[j][0] >= hi:
            out.append(run)
            continue
        new = change(run)
        if new is None:
            out.append(run)
            continue
        pos, k = lo, j
        while k < nr and ranges[k][0] < hi:
            a, b = max(ranges[k][0], lo), min(ranges[k][1], hi)
            if a > pos:
                out.append([pos, a] + run[2:])
            out.append([a, b] + new)
            changed.append((a, b))
            pos = b
            if ranges[k][1] > hi:
                break
            k += 1
        if pos < hi:
            out.append([pos, hi] + run[2:])
        j = k
    if changed:
        st.runs = merge(out)
    return changed


def ack(st: PartState, me: str, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ack what ``me`` holds (live or expired but not yet taken by another) in ``ranges``."""
    changed = apply(st, ranges, lambda r: [None, 0, 0, None] if r[2] == me else None)
    if changed:
        if st.keys:
            for a, b in changed:
                for o in range(a, b):
                    st.keys.pop(o, None)
        fold(st)
    return changed


def nack(st: PartState, me: str, ranges: list[tuple[int, int]], now_ms: int, delay_ms: int,
         backoff: list[int] | None, error: str | None) -> list[tuple[int, int]]:
    """Give back what ``me`` holds in ``ranges``, deliverable again after the delay/backoff."""
    def change(r):
        if r[2] != me:
            return None
        return [FREE, now_ms + max(delay_ms, backoff_ms(backoff, r[4])), r[4],
                error if error is not None else r[5]]
    return apply(st, ranges, change)


def defer(st: PartState, me: str, ranges: list[tuple[int, int]],
          due_ms: int) -> list[tuple[int, int]]:
    """Give back what ``me`` holds in ``ranges`` until ``due_ms``, refunding the delivery."""
    return apply(st, ranges,
                 lambda r: [FREE, due_ms, max(r[4] - 1, 0), r[5]] if r[2] == me else None)


def extend(st: PartState, me: str, ranges: list[tuple[int, int]],
           deadline_ms: int) -> list[tuple[int, int]]:
    """Push back the deadline of ``me``'s leases in ``ranges``."""
    return apply(st, ranges, lambda r: [me, deadline_ms, r[4], r[5]] if r[2] == me else None)


def release(st: PartState, me: str, now_ms: int) -> list[tuple[int, int]]:
    """Hand every lease of ``me`` back at once (its delivery still counts)."""
    return apply(st, [(st.committed, st.next)],
                 lambda r: [FREE, now_ms, r[4], r[5]] if r[2] == me else None)


class Lease:
    """What one poll took from one partition: deliveries and dead-letter jobs.

    ``deliver``: ``(lo, hi, count)`` ranges now leased to the poller, ``count``
    being the delivery count of this delivery. ``dead``: ``(lo, hi, count,
    error)`` ranges that used up ``max_deliver`` and are leased to the poller
    only to be moved to the dead-letter topic. ``due_ms``: the earliest time
    something not deliverable now becomes deliverable (FOREVER_MS if nothing).
    ``picked``: for a group with a subject filter, the new records it matched
    (already read, delivery count 1), beside ``deliver``; None otherwise.
    """

    __slots__ = ("deliver", "dead", "due_ms", "changed", "taken", "picked")

    def __init__(self) -> None:
        self.deliver: list[tuple[int, int, int]] = []
        self.dead: list[tuple[int, int, int, str | None]] = []
        self.due_ms = FOREVER_MS
        self.changed = False
        self.taken = 0
        self.picked: list | None = None


def _is_mine_live(run: list, me: str, now_ms: int, reclaim: bool) -> bool:
    return run[2] == me and run[3] > now_ms and not reclaim


def lease_shared(st: PartState, me: str, now_ms: int, room: int, end_offset: int,
                 ack_wait_ms: int, max_deliver: int, backoff: list[int] | None,
                 reclaim: bool, max_pending: int, max_dead: int) -> Lease:
    """Lease up to ``room`` records to ``me``: redeliveries (oldest first), then new ones.

    ``reclaim``: ``me`` is a new handle of a consumer name, so its own live
    leases are handed to it again at once.
    """
    res = Lease()
    deadline = now_ms + ack_wait_ms
    out: list[list] = []
    for run in st.runs:
        owner = run[2]
        if owner is None:
            out.append(run)
            continue
        lo, hi, _, due, count, err = run
        if owner != FREE and due > now_ms and not (reclaim and owner == me):
            res.due_ms = min(res.due_ms, due + backoff_ms(backoff, count))
            out.append(run)
            continue
        at = now_ms if (reclaim and owner == me) else ready_at(run, backoff)
        if at > now_ms:
            res.due_ms = min(res.due_ms, at)
            out.append(run)
            continue
        if count >= max_deliver:
            if max_dead <= 0:
                res.due_ms = now_ms
                out.append(run)
                continue
            take = min(max_dead, hi - lo)
            max_dead -= take
            out.append([lo, lo + take, me, deadline, count, err])
            res.dead.append((lo, lo + take, count, err))
        else:
            if room <= 0:
                res.due_ms = now_ms
                out.append(run)
                continue
            take = min(room, hi - lo)
            room -= take
            out.append([lo, lo + take, me, deadline, count + 1, err])
            res.deliver.append((lo, lo + take, count + 1))
            res.taken += take
            if count >= 1:
                st.redeliveries += take
        if lo + take < hi:
            out.append([lo + take, hi] + run[2:])
        res.changed = True
    if room > 0 and st.next < end_offset:
        pending = sum(r[1] - r[0] for r in out if r[2] is not None)
        hi = min(end_offset, st.next + room, st.next + max(0, max_pending - pending))
        if hi > st.next:
            out.append([st.next, hi, me, deadline, 1, None])
            res.deliver.append((st.next, hi, 1))
            res.taken += hi - st.next
            st.next = hi
            res.changed = True
    elif st.next < end_offset:
        res.due_ms = now_ms
    if res.changed:
        st.runs = merge(out)
    return res


def lease_key_shared(st: PartState, me: str, now_ms: int, room: int,
                     new_records: list[tuple[int, int | None]], ack_wait_ms: int,
                     max_deliver: int, backoff: list[int] | None, reclaim: bool,
                     max_pending: int, max_dead: int) -> Lease:
    """As lease_shared, but a key is held by one consumer at a time, in offset order.

    ``new_records``: ``(offset, key_hash or None)`` from ``st.next`` on, as the
    caller read them. A keyed record goes to ``me`` only if no other consumer
    holds a live lease on its key and no earlier unacked record of its key is
    waiting or left behind in this poll, so each key's records are handed out
    in order to one consumer at a time. Keyless records go to anyone.
    """
    res = Lease()
    deadline = now_ms + ack_wait_ms
    keys = st.keys
    blocked: set[int] = set()
    for run in st.runs:  # keys held by others' live leases are off limits, wherever they are
        owner = run[2]
        if owner and owner != me and run[3] > now_ms:
            for o in range(run[0], run[1]):
                h = keys.get(o)
                if h is not None:
                    blocked.add(h)
    out: list[list] = []
    for run in st.runs:
        owner = run[2]
        if owner is None:
            out.append(run)
            continue
        lo, hi, _, due, count, err = run
        if owner != FREE and due > now_ms and not (reclaim and owner == me):
            res.due_ms = min(res.due_ms, due + backoff_ms(backoff, count))
            out.append(run)
            continue
        at = now_ms if (reclaim and owner == me) else ready_at(run, backoff)
        for o in range(lo, hi):
            h = keys.get(o)
            if at > now_ms:
                res.due_ms = min(res.due_ms, at)
                if h is not None:
                    blocked.add(h)
                out.append([o, o + 1] + run[2:])
                continue
            if h is not None and h in blocked:
                out.append([o, o + 1] + run[2:])
                continue
            if count >= max_deliver:
                if max_dead <= 0:
                    res.due_ms = now_ms
                    if h is not None:
                        blocked.add(h)
                    out.append([o, o + 1] + run[2:])
                    continue
                max_dead -= 1
                out.append([o, o + 1, me, deadline, count, err])
                res.dead.append((o, o + 1, count, err))
                res.changed = True
                continue
            if room <= 0:
                res.due_ms = now_ms
                if h is not None:
                    blocked.add(h)
                out.append([o, o + 1] + run[2:])
                continue
            room -= 1
            out.append([o, o + 1, me, deadline, count + 1, err])
            res.deliver.append((o, o + 1, count + 1))
            res.taken += 1
            if count >= 1:
                st.redeliveries += 1
            res.changed = True
    pending = sum(r[1] - r[0] for r in out if r[2] is not None)
    for o, h in new_records:
        if o != st.next or pending >= max_pending:
            break
        if h is not None and h in blocked:
            out.append([o, o + 1, FREE, 0, 0, None])  # waits for its key in the window
        elif room > 0:
            room -= 1
            out.append([o, o + 1, me, deadline, 1, None])
            res.deliver.append((o, o + 1, 1))
            res.taken += 1
        else:
            res.due_ms = now_ms
            break
        if h is not None:
            keys[o] = h
        pending += 1
        st.next = o + 1
        res.changed = True
    if res.changed:
        st.runs = merge(out)
        res.deliver = _coalesce(res.deliver)
    return res


def rewind(st: PartState, me: str, now_ms: int, backoff: list[int] | None,
           reclaim: bool) -> bool:
    """Exclusive mode: restart delivery from the oldest record that failed.

    The first unacked run that is not a live lease of ``me`` failed (its
    lease expired, it was nacked, or another consumer held it before a
    takeover). Its first record keeps the delivery it used; every record
    after it that was handed out (to anyone) is revoked without counting that
    delivery, so one poison record never uses up the deliveries of the
    records queued behind it. Returns whether anything changed.
    """
    runs = st.runs
    first = -1
    for i, r in enumerate(runs):
        if r[2] is not None and not _is_mine_live(r, me, now_ms, reclaim):
            first = i
            break
    if first < 0:
        return False
    changed = False
    out = runs[:first]
    r = runs[first]
    lo, hi, owner, due, count, err = r
    if owner == FREE:
        out.append(r)
    else:
        at = now_ms if due > now_ms else due + backoff_ms(backoff, count)
        out.append([lo, lo + 1, FREE, at, count, err])
        if lo + 1 < hi:
            out.append([lo + 1, hi, FREE, 0, count - 1, err])
        changed = True
    for r in runs[first + 1:]:
        if r[2]:  # leased (to anyone): revoke, refunding the delivery
            out.append([r[0], r[1], FREE, 0, r[4] - 1, r[5]])
            changed = True
        else:
            out.append(r)
    if changed:
        st.runs = merge(out)
    return changed


def lease_exclusive(st: PartState, me: str, now_ms: int, room: int, end_offset: int,
                    ack_wait_ms: int, max_deliver: int, backoff: list[int] | None,
                    reclaim: bool, max_pending: int, max_dead: int,
                    take_new: bool = True) -> Lease:
    """Lease the next records of a partition ``me`` owns, strictly in offset order.

    Rewinds first (see ``rewind``); then walks the window from its oldest
    unacked record: a record not yet deliverable (a nack delay, a backoff)
    stops the walk, so nothing overtakes it. ``take_new`` False hands out
    only redeliveries (a partition being released to another consumer).
    """
    res = Lease()
    res.changed = rewind(st, me, now_ms, backoff, reclaim)
    deadline = now_ms + ack_wait_ms
    out: list[list] = []
    stopped = False
    for run in st.runs:
        owner = run[2]
        if stopped or owner is None or owner not in (FREE,):
            if not stopped and owner and owner == me and run[3] > now_ms:
                res.due_ms = min(res.due_ms, run[3] + backoff_ms(backoff, run[4]))
            out.append(run)
            continue
        lo, hi, _, due, count, err = run
        if due > now_ms:
            res.due_ms = min(res.due_ms, due)
            stopped = True
            out.append(run)
            continue
        if count >= max_deliver:
            take = min(max_dead, hi - lo)
            if take <= 0:
                res.due_ms = now_ms
                stopped = True
                out.append(run)
                continue
            max_dead -= take
            out.append([lo, lo + take, me, deadline, count, err])
            res.dead.append((lo, lo + take, count, err))
        else:
            take = min(room, hi - lo)
            if take <= 0:
                res.due_ms = now_ms
                stopped = True
                out.append(run)
                continue
            room -= take
            out.append([lo, lo + take, me, deadline, count + 1, err])
            res.deliver.append((lo, lo + take, count + 1))
            res.taken += take
            if count >= 1:
                st.redeliveries += take
        res.changed = True
        if lo + take < hi:
            out.append([lo + take, hi] + run[2:])
            stopped = True
    if not stopped and take_new and st.next < end_offset:
        if room > 0:
            pending = sum(r[1] - r[0] for r in out if r[2] is not None)
            hi = min(end_offset, st.next + room, st.next + max(0, max_pending - pending))
            if hi > st.next:
                out.append([st.next, hi, me, deadline, 1, None])
                res.deliver.append((st.next, hi, 1))
                res.taken += hi - st.next
                st.next = hi
                res.changed = True
        else:
            res.due_ms = now_ms
    if res.changed:
        st.runs = merge(out)
        res.deliver = _coalesce(res.deliver)
    return res


def _coalesce(ranges: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    for lo, hi, c in ranges:
        if out and out[-1][1] == lo and out[-1][2] == c:
            out[-1] = (out[-1][0], hi, c)
        else:
            out.append((lo, hi, c))
    return out


def has_live_lease(st: PartState, me: str, now_ms: int) -> bool:
    """Whether ``me`` holds any lease on this partition that has not expired."""
    return any(r[2] == me and r[3] > now_ms for r in st.runs)


def leased_records(st: PartState) -> list[tuple[str, int, int, int]]:
    """``(consumer, offset, deadline_ms, count)`` for every leased record of the window."""
    out: list[tuple[str, int, int, int]] = []
    for lo, hi, owner, due, count, _ in st.runs:
        if owner:
            out.extend((owner, o, due, count) for o in range(lo, hi))
    return out


# ------------------------------------------------- the layout in LMDB (indexed)
# Since the indexed layout, a partition's state is not one value but many small
# ones (docs/groups.md, "Group state in LMDB"): a *head* (the scalar fields and
# how many records are pending), one entry per run keyed by its first offset,
# one entry per unacked run in a *due index* keyed by (ready time, first
# offset), and one entry per keyed record of a key_shared window. A poll or an
# ack then reads and writes a few entries, O(log n) each in LMDB's B-tree,
# however many leases are outstanding. The functions below run the shared
# poll and every settle on that layout through a store object (groups.py's
# _PartStore) with these methods: ``head``; ``get(lo)`` (the run starting at
# lo); ``containing(off)``; ``last()``; ``put(run)`` and ``remove(run)`` (the
# run and its due-index entry); ``replace(old, new)`` (same first offset);
# ``due_after(key)`` (the next due-index entry after ``key``, as
# ``(key, ready_ms, lo)``); ``keyed`` (whether key hashes may exist) and
# ``drop_keys(lo, hi)`` (key hashes of a range).

_HEAD = struct.Struct(">BQqqqqqqH")  # version, seq, committed, next, epoch, rd, dl, pending,
_HEAD_VERSION = 2                   # owner length (0xFFFF: no owner); then owner, backoff
_NO_OWNER = 0xFFFF
_RUN = struct.Struct(">qqiB")  # hi, due_ms, count, kind; then owner (kind 2), error
_ACKED, _FREE, _OWNED = 0, 1, 2


class Head:
    """The scalar part of a partition's state in the indexed layout.

    ``pending``: records of the window not acked (kept exact by every
    operation, so lag and the pending cap cost nothing to compute); ``bo``:
    the backoff (ms) the due index was computed with; ``seq``: bumped by
    every change, so equal heads mean an unchanged partition.
    """

    __slots__ = ("seq", "committed", "next", "owner", "epoch", "redeliveries",
                 "dead_letters", "pending", "bo")

    def __init__(self) -> None:
        self.seq = 0
        self.committed = self.next = self.epoch = 0
        self.redeliveries = self.dead_letters = self.pending = 0
        self.owner: str | None = None
        self.bo: list[int] = []

    def take(self, st: PartState, bo: list[int] | None) -> None:
        """Copy the scalar fields of a PartState (and the backoff now indexed)."""
        self.committed, self.next = st.committed, st.next
        self.owner, self.epoch = st.owner, st.epoch
        self.redeliveries, self.dead_letters = st.redeliveries, st.dead_letters
        self.pending = pending_count(st)
        self.bo = list(bo or [])


def is_head(raw: bytes) -> bool:
    """Whether a stored partition value is a head (not the JSON of the older layout)."""
    return raw[:1] == b"\x02"


def encode_head(h: Head) -> bytes:
    ob = b"" if h.owner is None else h.owner.encode()
    out = _HEAD.pack(_HEAD_VERSION, h.seq, h.committed, h.next, h.epoch, h.redeliveries,
                     h.dead_letters, h.pending, _NO_OWNER if h.owner is None else len(ob)) + ob
    if h.bo:
        out += struct.pack(f">{len(h.bo)}q", *h.bo)
    return out


def decode_head(raw: bytes) -> Head:
    h = Head.__new__(Head)
    (_, h.seq, h.committed, h.next, h.epoch, h.redeliveries, h.dead_letters, h.pending,
     n) = _HEAD.unpack_from(raw)
    pos = _HEAD.size
    if n == _NO_OWNER:
        h.owner = None
    else:
        h.owner = raw[pos:pos + n].decode()
        pos += n
    k = (len(raw) - pos) // 8
    h.bo = list(struct.unpack_from(f">{k}q", raw, pos)) if k else []
    return h


def encode_run(run: Sequence[Any]) -> bytes:
    owner = run[2]
    if owner is None:
        return _RUN.pack(run[1], 0, 0, _ACKED)
    if owner == FREE:
        out = _RUN.pack(run[1], run[3], run[4], _FREE)
    else:
        ob = owner.encode()
        out = _RUN.pack(run[1], run[3], run[4], _OWNED) + struct.pack(">H", len(ob)) + ob
    if run[5] is not None:
        out += b"\x01" + run[5].encode()
    return out


def decode_run(lo: int, raw: bytes) -> list:
    hi, due, count, kind = _RUN.unpack_from(raw)
    if kind == _ACKED:
        return [lo, hi, None, 0, 0, None]
    pos = _RUN.size
    if kind == _FREE:
        owner = FREE
    else:
        (n,) = struct.unpack_from(">H", raw, pos)
        owner = raw[pos + 2:pos + 2 + n].decode()
        pos += 2 + n
    err = raw[pos + 1:].decode() if len(raw) > pos else None
    return [lo, hi, owner, due, count, err]


def _same_state(a: list, b: list) -> bool:
    return a[2] == b[2] and (a[2] is None or (a[3] == b[3] and a[4] == b[4] and a[5] == b[5]))


def _coalesce_at(s, off: int) -> None:
    """Merge the run starting at ``off`` into its left neighbour when they share a state."""
    h = s.head
    if off <= h.committed or off >= h.next:
        return
    right = s.get(off)
    if right is None:
        return
    left = s.containing(off - 1)
    if left is None or not _same_state(left, right):
        return
    s.remove(right)
    s.replace(left, [left[0], right[1]] + left[2:])


def fold_store(s) -> None:
    """Move the acked prefix of the window into ``committed`` (acked runs never touch,
    so this deletes at most one run)."""
    h = s.head
    while h.committed < h.next:
        r = s.get(h.committed)
        if r is None or r[2] is not None:
            break
        s.remove(r)
        h.committed = r[1]


def apply_store(s, ranges: list[tuple[int, int]], change) -> list[tuple[int, int, list]]:
    """``apply`` on the indexed layout: visits only the runs that overlap ``ranges``.

    Returns the ``(lo, hi, new_state)`` pieces that changed; keeps ``pending``
    exact, merges equal neighbours at the pieces' edges and folds.
    """
    h = s.head
    pieces: list[tuple[int, int, list]] = []
    for a, b in ranges:
        a, b = max(a, h.committed), min(b, h.next)
        if a >= b:
            continue
        run = s.containing(a)
        while run is not None and run[0] < b:
            lo, hi = run[0], run[1]
            new = change(run)
            if new is not None and new[0] is None and lo == h.committed and a <= lo and \
                    hi <= b:
                # The usual ack: a whole run at the front of the window is done.
                s.remove(run)
                h.committed = hi
                h.pending -= hi - lo
                pieces.append((lo, hi, new))
                fold_store(s)  # may fold acked runs after it too
                nxt = max(hi, h.committed)
                if nxt >= b or nxt >= h.next:
                    break
                run = s.get(nxt)
                continue
            if new is not None:
                x, y = max(a, lo), min(b, hi)
                s.remove(run)
                if x > lo:
                    s.put([lo, x] + run[2:])
                s.put([x, y] + new)
                if y < hi:
                    s.put([y, hi] + run[2:])
                if new[0] is None and run[2] is not None:
                    h.pending -= y - x
                pieces.append((x, y, new))
            if hi >= b or hi >= h.next:
                break
            run = s.get(hi)
    if pieces:
        for x, y, _ in pieces:
            _coalesce_at(s, y)
            _coalesce_at(s, x)
        fold_store(s)
    return pieces


def ack_store(s, me: str, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``ack`` on the indexed layout."""
    pieces = apply_store(s, ranges, lambda r: [None, 0, 0, None] if r[2] == me else None)
    if s.keyed:
        for x, y, _ in pieces:
            s.drop_keys(x, y)
    return [(x, y) for x, y, _ in pieces]


def pass_over_store(s, hi: int) -> bool:
    """Count ``[next, hi)`` as done without a delivery (records a subject filter passed
    over): an empty window just moves, otherwise the acked run ending at ``next``
    grows or a new one starts there. One entry at most, however many records.
    True if anything changed."""
    h = s.head
    if hi <= h.next:
        return False
    if h.committed == h.next:
        h.committed = h.next = hi
        return True
    last = s.last()
    if last is not None and last[2] is None and last[1] == h.next:
        s.replace(last, [last[0], hi, None, 0, 0, None])
    else:
        s.put([h.next, hi, None, 0, 0, None])
    h.next = hi
    return True


def lease_shared_store(s, me: str, now_ms: int, room: int, end_offset: int,
                       ack_wait_ms: int, max_deliver: int, max_pending: int,
                       max_dead: int) -> Lease:
    """``lease_shared`` on the indexed layout (not for a reclaiming consumer).

    Redeliveries come from the due index in the order they came due (ties
    by offset): the walk stops at the first entry not due yet, so a poll
    reads only what it hands out, plus one entry. Then new records, as one
    run.
    """
    res = Lease()
    h = s.head
    deadline = now_ms + ack_wait_ms
    key = None
    while room > 0 or max_dead > 0:
        e = s.due_after(key)
        if e is None:
            break
        key, ready, lo = e
        if ready > now_ms:
            res.due_ms = min(res.due_ms, ready)
            break
        run = s.get(lo)
        lo, hi, _, due, count, err = run
        if count >= max_deliver:
            if max_dead <= 0:
                res.due_ms = now_ms
                continue
            take = min(max_dead, hi - lo)
            max_dead -= take
            new = [lo, lo + take, me, deadline, count, err]
            res.dead.append((lo, lo + take, count, err))
        else:
            if room <= 0:
                res.due_ms = now_ms
                break
            take = min(room, hi - lo)
            room -= take
            new = [lo, lo + take, me, deadline, count + 1, err]
            res.deliver.append((lo, lo + take, count + 1))
            res.taken += take
            if count >= 1:
                h.redeliveries += take
        s.remove(run)
        s.put(new)
        if lo + take < hi:
            s.put([lo + take, hi] + run[2:])
        res.changed = True
    if room > 0 and h.next < end_offset:
        hi = min(end_offset, h.next + room, h.next + max(0, max_pending - h.pending))
        if hi > h.next:
            # Its own run, even beside an equal one: one poll's records stay one run,
            # and acking them is deleting that run (the usual ack, see apply_store).
            s.put([h.next, hi, me, deadline, 1, None])
            res.deliver.append((h.next, hi, 1))
            res.taken += hi - h.next
            h.pending += hi - h.next
            h.next = hi
            res.changed = True
    elif h.next < end_offset:
        res.due_ms = now_ms
    if res.deliver:
        res.deliver = _coalesce(res.deliver)
    return res
