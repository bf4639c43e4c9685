"""The pure group-state algebra (backends.local.groupstate): runs, acks, leases, rewinds."""

from __future__ import annotations

import random

from streamlog.backends.local import groupstate as gs

FREE = gs.FREE
NOW = 1_000_000
AW = 30_000
BIG = 1 << 30


def lease(st, me, room, end, **kw):
    args = dict(now_ms=NOW, room=room, end_offset=end, ack_wait_ms=AW, max_deliver=5,
                backoff=None, reclaim=False, max_pending=BIG, max_dead=BIG)
    args.update(kw)
    return gs.lease_shared(st, me, **args)


def check_invariants(st):
    """Runs cover [committed, next) contiguously; no acked run at the front; no empty run."""
    pos = st.committed
    for r in st.runs:
        assert r[0] == pos and r[1] > r[0]
        pos = r[1]
    assert pos == st.next
    assert not st.runs or st.runs[0][2] is not None


def test_a_poll_leases_a_range_as_one_run():
    """Leasing 1,000 new records adds one run, not 1,000 entries."""
    st = gs.PartState(0)
    res = lease(st, "a", 1000, 5000)
    assert res.deliver == [(0, 1000, 1)] and res.taken == 1000
    assert st.runs == [[0, 1000, "a", NOW + AW, 1, None]]
    check_invariants(st)


def test_acks_fold_the_contiguous_prefix_into_committed():
    """The committed offset advances over the acked prefix only; acks above a hole stay
    as one acked run."""
    st = gs.PartState(0)
    lease(st, "a", 10, 10)
    assert gs.ack(st, "a", [(3, 6)]) == [(3, 6)]
    assert st.committed == 0
    gs.ack(st, "a", [(0, 3)])
    assert st.committed == 6
    gs.ack(st, "a", [(6, 10)])
    assert st.committed == 10 and st.runs == []
    check_invariants(st)


def test_ack_by_non_holder_changes_nothing():
    """Only the holder's ack counts."""
    st = gs.PartState(0)
    lease(st, "a", 5, 5)
    assert gs.ack(st, "b", [(0, 5)]) == []
    assert st.committed == 0


def test_random_acks_keep_the_state_small_and_consistent():
    """Acking a leased range in random order keeps the invariants and ends fully folded."""
    rng = random.Random(7)
    st = gs.PartState(100)
    lease(st, "a", 500, 1000)
    offsets = list(range(100, 600))
    rng.shuffle(offsets)
    for i in range(0, len(offsets), 7):
        gs.ack(st, "a", gs.to_ranges(offsets[i:i + 7]))
        check_invariants(st)
    assert st.committed == 600 and st.runs == []


def test_expired_lease_is_redelivered_with_backoff_then_dead_lettered():
    """An expired lease becomes deliverable after its backoff; at max_deliver it becomes a
    dead-letter job instead of a delivery."""
    st = gs.PartState(0)
    lease(st, "a", 2, 2, max_deliver=2, backoff=[500])
    later = NOW + AW + 100
    res = lease(st, "b", 10, 2, now_ms=later, max_deliver=2, backoff=[500])
    assert res.deliver == [] and res.due_ms == NOW + AW + 500
    res = lease(st, "b", 10, 2, now_ms=NOW + AW + 500, max_deliver=2, backoff=[500])
    assert res.deliver == [(0, 2, 2)]
    assert st.redeliveries == 2
    res = lease(st, "c", 10, 2, now_ms=NOW + 3 * AW, max_deliver=2, backoff=[500])
    assert res.deliver == [] and res.dead == [(0, 2, 2, None)]


def test_nack_keeps_last_error_and_waits_delay():
    """nack records the error and the not-before time; a later nack without error keeps
    the last one."""
    st = gs.PartState(0)
    lease(st, "a", 1, 1)
    gs.nack(st, "a", [(0, 1)], NOW, 2000, None, "boom")
    assert st.runs == [[0, 1, FREE, NOW + 2000, 1, "boom"]]
    assert lease(st, "a", 1, 1).deliver == []
    lease(st, "a", 1, 1, now_ms=NOW + 2000)
    gs.nack(st, "a", [(0, 1)], NOW + 2000, 0, None, None)
    assert st.runs[0][5] == "boom"


def test_release_hands_everything_back_now():
    """release frees every lease of a consumer for immediate redelivery to others."""
    st = gs.PartState(0)
    lease(st, "a", 3, 6)
    lease(st, "b", 3, 6)
    gs.release(st, "a", NOW)
    res = lease(st, "b", 10, 6)
    assert res.deliver == [(0, 3, 2)]


def test_clamp_drops_what_retention_removed():
    """Offsets below the start offset count as done, leases included."""
    st = gs.PartState(0)
    lease(st, "a", 10, 10)
    gs.ack(st, "a", [(8, 10)])
    gs.clamp(st, 5)
    assert st.committed == 5 and st.runs[0][0] == 5
    gs.clamp(st, 8)
    assert st.committed == 10 and st.runs == []


def test_max_pending_bounds_new_leases():
    """No more new records are leased once max_pending records are unacked."""
    st = gs.PartState(0)
    assert lease(st, "a", 100, 1000, max_pending=150).taken == 100
    assert lease(st, "a", 100, 1000, max_pending=150).taken == 50
    assert lease(st, "a", 100, 1000, max_pending=150).taken == 0


def test_encode_decode_round_trip():
    """The stored JSON holds the whole state."""
    st = gs.PartState(3)
    st.keys = {3: 17}
    lease(st, "a", 4, 9)
    st.owner, st.epoch = "a", 4
    st2 = gs.decode(gs.encode(st))
    assert (st2.committed, st2.next, st2.runs, st2.owner, st2.epoch, st2.keys) == (
        st.committed, st.next, st.runs, st.owner, st.epoch, st.keys)


def ks(st, me, room, new, **kw):
    args = dict(now_ms=NOW, room=room, new_records=new, ack_wait_ms=AW, max_deliver=5,
                backoff=None, reclaim=False, max_pending=BIG, max_dead=BIG)
    args.update(kw)
    return gs.lease_key_shared(st, me, **args)


def test_key_shared_holds_a_key_for_one_consumer():
    """A key leased to one consumer is skipped for others; keyless records go to anyone."""
    st = gs.PartState(0)
    recs = [(0, 1), (1, 2), (2, 1), (3, None), (4, 2)]
    res = ks(st, "a", 1, recs)
    assert res.deliver == [(0, 1, 1)]
    res = ks(st, "b", 10, recs[1:])
    # key 1 is held by a: offset 2 waits; keys 2 and keyless go to b
    assert res.deliver == [(1, 2, 1), (3, 5, 1)]
    assert st.runs[2][:3] == [2, 3, FREE]
    res = ks(st, "c", 10, [])
    assert res.deliver == []  # key 1 still held by a, key 2 by b
    gs.ack(st, "a", [(0, 1)])
    res = ks(st, "c", 10, [])
    assert res.deliver == [(2, 3, 1)]


def test_key_shared_keeps_key_order_behind_a_waiting_record():
    """A nacked record with a delay blocks the later records of its key, not others."""
    st = gs.PartState(0)
    ks(st, "a", 1, [(0, 1)])
    gs.nack(st, "a", [(0, 1)], NOW, 5000, None, None)
    res = ks(st, "b", 10, [(1, 1), (2, 9)])
    assert res.deliver == [(2, 3, 1)]


def ex(st, me, room, end, **kw):
    args = dict(now_ms=NOW, room=room, end_offset=end, ack_wait_ms=AW, max_deliver=5,
                backoff=None, reclaim=False, max_pending=BIG, max_dead=BIG)
    args.update(kw)
    return gs.lease_exclusive(st, me, **args)


def test_exclusive_rewinds_to_oldest_failed_and_refunds_the_rest():
    """After a nack, exclusive delivery restarts at the nacked record; records after it
    are handed out again without counting that delivery."""
    st = gs.PartState(0)
    ex(st, "a", 10, 10)
    gs.ack(st, "a", [(0, 3)])
    gs.nack(st, "a", [(3, 4)], NOW, 0, None, None)
    res = ex(st, "a", 100, 10)
    assert res.deliver == [(3, 4, 2), (4, 10, 1)]


def test_exclusive_waits_for_a_delayed_record_before_later_ones():
    """A delayed redelivery stops the partition: nothing overtakes it."""
    st = gs.PartState(0)
    ex(st, "a", 2, 5)
    gs.nack(st, "a", [(0, 1)], NOW, 1000, None, None)
    res = ex(st, "a", 100, 5)
    assert res.deliver == [] and res.due_ms == NOW + 1000
    res = ex(st, "a", 100, 5, now_ms=NOW + 1000)
    assert res.deliver == [(0, 1, 2), (1, 5, 1)]


def test_exclusive_takeover_redelivers_from_oldest_unacked():
    """A new owner starts from the previous owner's oldest unacked record."""
    st = gs.PartState(0)
    ex(st, "a", 10, 10)
    gs.ack(st, "a", [(0, 4)])
    res = ex(st, "b", 100, 12)
    assert res.deliver == [(4, 5, 2), (5, 12, 1)]


def _runs_by_offset(st):
    out = {}
    for lo, hi, owner, due, count, _ in st.runs:
        for o in range(lo, hi):
            out[o] = (owner, due, count)
    return out


def test_random_operations_never_double_lease_and_always_drain():
    """Random polls, acks, nacks, expiries and releases by 3 consumers (shared and
    key_shared): a record is never live-leased to two consumers, keyed records of one key
    are never held by two consumers, the runs stay consistent, and draining acks
    everything."""
    for mode in ("shared", "key_shared"):
        for seed in range(8):
            rng = random.Random(seed)
            st = gs.PartState(0)
            now = NOW
            end = 0
            keys = {}
            held: dict[str, set[int]] = {c: set() for c in "abc"}
            for _ in range(300):
                now += rng.randint(0, 400)
                op = rng.random()
                c = rng.choice("abc")
                if op < 0.25:
                    for _ in range(rng.randint(1, 20)):
                        keys[end] = rng.choice([None, 1, 2, 3])
                        end += 1
                    continue
                if op < 0.6:
                    if mode == "shared":
                        res = gs.lease_shared(st, c, now, rng.randint(1, 15), end, 1000, 4,
                                              [200], False, BIG, BIG)
                    else:
                        new = [(o, keys[o]) for o in range(st.next, end)]
                        res = gs.lease_key_shared(st, c, now, rng.randint(1, 15), new, 1000, 4,
                                                  [200], False, BIG, BIG)
                    got = {o for lo, hi, _ in res.deliver for o in range(lo, hi)}
                    got |= {o for lo, hi, _, _ in res.dead for o in range(lo, hi)}
                    live = _runs_by_offset(st)
                    for other in "abc":
                        if other != c:
                            stale = {o for o in held[other] if live.get(o, (None,))[0] != other}
                            held[other] -= stale
                            assert not got & held[other]
                            if mode == "key_shared":
                                theirs = {keys[o] for o in held[other]
                                          if live[o][1] > now and keys[o] is not None}
                                mine = {keys[o] for o in got if keys[o] is not None}
                                assert not theirs & mine
                    held[c] |= got
                elif held[c]:
                    pick = rng.sample(sorted(held[c]), rng.randint(1, len(held[c])))
                    ranges = gs.to_ranges(pick)
                    if op < 0.85:
                        gs.ack(st, c, ranges)
                    elif op < 0.95:
                        gs.nack(st, c, ranges, now, rng.choice([0, 300]), [200], "e")
                    else:
                        gs.release(st, c, now)
                    held[c] -= set(pick)
                check_invariants(st)
            # drain: one consumer, far in the future, acks all
            for _ in range(200):
                now += 10_000
                if mode == "shared":
                    res = gs.lease_shared(st, "z", now, 1000, end, 1000, 99, None, False,
                                          BIG, BIG)
                else:
                    new = [(o, keys[o]) for o in range(st.next, end)]
                    res = gs.lease_key_shared(st, "z", now, 1000, new, 1000, 99, None, False,
                                              BIG, BIG)
                spans = [(lo, hi) for lo, hi, _ in res.deliver]
                spans += [(lo, hi) for lo, hi, _, _ in res.dead]
                if not spans and st.committed == end:
                    break
                gs.ack(st, "z", sorted(spans))
                check_invariants(st)
            assert st.committed == end and st.runs == [], (mode, seed)
