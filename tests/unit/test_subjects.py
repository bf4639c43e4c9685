"""Subjects: append(subject=) stores a header; groups and subscriptions with subjects= deliver
only matching records (NATS wildcards) and count the rest as done."""

from __future__ import annotations

import pytest

import streamlog
from streamlog.backends.local import codec as _codec

SUBJECTS = ["orders.eu.created", "orders.eu.paid", "orders.eu.de.created", "orders.us.created",
            "orders.us.west.paid", "orders", "billing.eu.created"]


def _fill(t):
    for i, s in enumerate(SUBJECTS):
        t.append(b"%d" % i, key=b"k%d" % i, subject=s)
    t.append(b"no-subject")


def _drain(g):
    out = []
    while True:
        msgs = g.poll(max_records=100, timeout=0.05)
        if not msgs:
            return out
        for m in msgs:
            out.append(m.headers.get("subject"))
            assert m.delivery_count == 1
            m.ack()


def test_subject_is_stored_as_a_header(store):
    t = store.topic("o")
    pos = t.append(b"v", subject="orders.eu.created", headers={"h": "1"})
    assert t.get(*pos).headers == {"h": b"1", "subject": b"orders.eu.created"}


@pytest.mark.parametrize("bad, exc", [
    ("", ValueError), ("orders..eu", ValueError), ("orders.*", ValueError),
    ("orders.>", ValueError), ("orders eu", ValueError), (".orders", ValueError),
    (b"orders", TypeError), (3, TypeError),
])
def test_bad_subject_refused_before_writing(store, bad, exc):
    t = store.topic("o")
    with pytest.raises(exc):
        t.append(b"v", subject=bad)
    assert t.end_offset(0) == 0


@pytest.mark.parametrize("mode", ["shared", "key_shared", "exclusive"])
@pytest.mark.parametrize("filters, expected", [
    (["orders.eu.*"], ["orders.eu.created", "orders.eu.paid"]),
    (["orders.>"], [s for s in SUBJECTS if s.startswith("orders.")]),
    (["*.eu.created"], ["orders.eu.created", "billing.eu.created"]),
    (["orders.eu.*", "orders.us.>"], ["orders.eu.created", "orders.eu.paid",
                                      "orders.us.created", "orders.us.west.paid"]),
    (["orders"], ["orders"]),
    ([">"], SUBJECTS),
])
def test_group_delivers_only_matching_records(store, mode, filters, expected):
    """Only matching records are handed out; the others (and records without a subject)
    count as done: the group's lag ends at 0."""
    t = store.topic("o", partitions=3)
    _fill(t)
    g = t.group("g", mode=mode, subjects=filters)
    got = _drain(g)
    assert sorted(s.decode() for s in got) == sorted(expected)
    assert g.lag() == 0
    assert t.group("all").lag() == len(SUBJECTS) + 1  # another group is not filtered


def test_filtered_records_never_reach_dead_letters(store):
    """A record the filter drops is done, not failed: with max_deliver=1 and a consumer that
    nacks everything it gets, only the matching record goes to the dead-letter topic."""
    t = store.topic("o")
    _fill(t)
    g = t.group("g", subjects=["billing.>"], max_deliver=1)
    for _ in range(5):
        for m in g.poll(timeout=0.05):
            m.nack()
    dl = [r.headers["subject"] for r in g.dead_letters().read(0)]
    assert dl == [b"billing.eu.created"] and g.lag() == 0


def test_filter_is_a_stored_option(store):
    """group_config shows the filter; opening the group with another replaces it, as other
    options do; subjects=None removes it."""
    t = store.topic("o")
    t.group("g", subjects=["b.*", "a.>", "b.*"]).close()
    assert t.group_config("g")["subjects"] == ["a.>", "b.*"]
    t.group("g", subjects=["c"]).close()
    assert t.group_config("g")["subjects"] == ["c"]
    t.group("g").close()
    assert t.group_config("g")["subjects"] is None


@pytest.mark.parametrize("bad, exc", [
    ("orders.*", TypeError), ([], ValueError), (["orders.>.x"], ValueError),
    (["or*ders"], ValueError), ([""], ValueError), ([1], TypeError), (["a..b"], ValueError),
])
def test_bad_filters_refused(store, bad, exc):
    t = store.topic("o")
    with pytest.raises(exc):
        t.group("g", subjects=bad)
    assert t.groups() == []


def test_pubsub_subscriptions_with_subjects(store):
    """Each subscription gets the messages its own filter matches."""
    ps = store.pubsub("events")
    for s in SUBJECTS:
        ps.publish(s.encode(), subject=s)
    eu = ps.subscribe("eu", subjects=["orders.eu.>"])
    paid = ps.subscribe("paid", subjects=["*.*.paid", "*.*.*.paid"])
    assert sorted(m.value for m in eu.listen(timeout=0.1)) == [
        b"orders.eu.created", b"orders.eu.de.created", b"orders.eu.paid"]
    assert sorted(m.value for m in paid.listen(timeout=0.1)) == [
        b"orders.eu.paid", b"orders.us.west.paid"]
    assert eu.lag() == 0 and paid.lag() == 0


def test_queue_put_with_subject_and_serializer(store):
    q = store.queue("jobs", serializer="json")
    q.put({"a": 1}, subject="jobs.email")
    m = q.get(timeout=1)
    assert m.value == {"a": 1} and m.headers["subject"] == b"jobs.email"
    m.ack()
    t = store.topic("jobs", serializer="json")
    g = t.group("mail", subjects=["jobs.*"])
    (m,) = g.poll(timeout=1)
    assert m.value == {"a": 1}


def test_one_at_a_time_consumer_respects_the_filter(store):
    """A consumer that settles one message before the next (the queue's pattern) still
    gets only matching records."""
    t = store.topic("o")
    _fill(t)
    g = t.group("g", subjects=["orders.us.>"])
    g.one_at_a_time()
    got = []
    while True:
        msgs = g.poll(max_records=1, timeout=0.05)
        if not msgs:
            break
        got.append(msgs[0].headers["subject"])
        msgs[0].ack()
    assert got == [b"orders.us.created", b"orders.us.west.paid"]


def test_small_polls_get_every_match_once(store):
    """Polls smaller than the matches in view hand each matching record out once, with
    delivery count 1 (those over a poll's room go back uncounted), in offset order."""
    t = store.topic("o")
    for i in range(300):
        t.append(b"%d" % i, subject="a.hit" if i % 7 == 0 else "a.miss")
    g = t.group("g", subjects=["*.hit"])
    got = []
    while True:
        msgs = g.poll(max_records=2, timeout=0.05)
        if not msgs:
            break
        assert len(msgs) <= 2
        for m in msgs:
            assert m.delivery_count == 1
            got.append(int(m.value))
            m.ack()
    assert got == [i for i in range(300) if i % 7 == 0]
    assert g.lag() == 0


def _sparse(t, n: int, every: int, key: bytes | None = None) -> list[int]:
    """``n`` records (all with ``key``: one partition); every ``every``-th is
    ``orders.eu.created``, the rest other subjects (or none). Returns the matching offsets."""
    values = [b"%d" % i for i in range(n)]
    headers = [{"subject": b"orders.eu.created"} if i % every == 0 else
               ({"subject": b"orders.us.created"} if i % 3 else None) for i in range(n)]
    pos = []
    for i in range(0, n, 1000):  # several batches
        pos += t.append_many(values[i:i + 1000], keys=None if key is None else
                             [key] * len(values[i:i + 1000]), headers=headers[i:i + 1000])
    return [pos[i].offset for i in range(n) if i % every == 0]


def _run_entries(g, partition: int = 0) -> int:
    return len(g._states()[partition].runs)


def test_passed_over_records_are_done_as_ranges(store):
    """The records a poll's filter passes over cost the group's state a few entries, not one
    per record: a poll of 100 matches among 10,000 records leaves one leased run (the
    matches and the gaps between them) and nothing else; acking the messages acks it whole,
    and the group's lag and committed position move past every record looked at."""
    t = store.topic("o")
    want = _sparse(t, 20_000, 100)
    g = t.group("g", subjects=["orders.eu.*"])
    msgs = g.poll(100, timeout=0)
    assert [m.offset for m in msgs] == want[:100]
    st = g._states()[0]
    assert st.committed == 0 and st.next == want[99] + 1 and len(st.runs) == 1
    assert g.ack(msgs) == [True] * 100
    st = g._states()[0]
    assert st.committed == want[99] + 1 and st.runs == []
    more = g.poll(1000, timeout=0)
    assert [m.offset for m in more] == want[100:]
    assert g.lag() == want[-1] + 1 - want[100]  # the leased run; the tail after it is done
    g.ack(more)
    st = g._states()[0]
    assert (st.committed, st.runs, g.lag()) == (20_000, [], 0)


def test_no_match_moves_the_group_past_everything(store):
    """A filter that matches nothing in a long partition leaves lag 0 and no run entries."""
    t = store.topic("o")
    _sparse(t, 30_000, 10**9)
    t.append(b"late", subject="orders.us.created")
    g = t.group("g", subjects=["billing.>"])
    assert g.poll(100, timeout=0) == []
    assert g.lag() == 0 and _run_entries(g) == 0


def test_passed_over_records_behind_a_lease_stay_done(store):
    """Records passed over while earlier messages are still leased are done (one acked run);
    when the earlier messages are acked the group's position folds past them all."""
    t = store.topic("o")
    want = _sparse(t, 1_000, 100)
    g = t.group("g", subjects=["orders.eu.*"])
    first = g.poll(3, timeout=0)
    rest = g.poll(100, timeout=0)
    assert [m.offset for m in first + rest] == want
    st = g._states()[0]
    assert len(st.runs) == 4 and st.next == 1_000  # leased, passed over, leased, passed over
    g.ack(rest)
    assert g.lag() == want[2] + 1  # the first three messages and the records before them
    g.ack(first)
    assert g.lag() == 0 and g._states()[0].runs == []


def test_consumer_death_redelivers_only_matches(store):
    """A consumer that dies with its messages unacked: the lease run (matches and the gaps
    between them) comes back after ack_wait_s and is filtered again, so another consumer
    gets exactly the matching records, delivery count 2, and the rest are done."""
    t = store.topic("o")
    want = _sparse(t, 2_000, 50)
    g1 = t.group("g", subjects=["orders.eu.*"], ack_wait_s=0.2, consumer="a")
    first: list = []
    while len(first) < len(want):
        first += g1.poll(100, timeout=0)
    assert [m.offset for m in first] == want
    g2 = t.group("g", subjects=["orders.eu.*"], ack_wait_s=0.2, consumer="b")
    assert g2.poll(100, timeout=0) == []
    import time
    time.sleep(0.3)
    again = []
    while True:
        msgs = g2.poll(100, timeout=0.05)
        if not msgs:
            break
        again += msgs
        g2.ack(msgs)
    assert [m.offset for m in again] == want
    assert {m.delivery_count for m in again} == {2}
    assert g2.lag() == 0


def test_nack_hands_back_the_message_and_its_gap(store):
    """A nacked message comes back (delivery count 2); the records passed over before it go
    back with it and are filtered out again on the way: they are done, it is pending."""
    t = store.topic("o")
    want = _sparse(t, 500, 100)
    g = t.group("g", subjects=["orders.eu.*"])
    msgs = g.poll(100, timeout=0)
    assert [m.offset for m in msgs] == want
    g.ack(msgs[:2] + msgs[3:])
    assert msgs[2].nack() is True
    (m,) = g.poll(100, timeout=1)
    assert (m.offset, m.delivery_count) == (want[2], 2)
    assert g.lag() == 1
    m.ack()
    assert g.lag() == 0 and g._states()[0].runs == []


def test_filter_counts_as_done_across_segments_and_partitions(tmp_path):
    """Matches are found across segment boundaries and on every partition."""
    with streamlog.open(tmp_path / "s") as log:
        t = log.topic("o", partitions=2, segment_bytes=64 * 1024)
        keys = {t._partition_of(k): k for k in (b"a", b"b", b"c", b"d", b"e")}
        want = {p: _sparse(t, 5_000, 37, key=keys[p]) for p in (0, 1)}
        g = t.group("g", subjects=["orders.eu.*"])
        got: dict[int, list[int]] = {0: [], 1: []}
        while True:
            msgs = g.poll(7, timeout=0)
            if not msgs:
                break
            for m in msgs:
                got[m.partition].append(m.offset)
            g.ack(msgs)
        assert got == want and g.lag() == 0


def test_filter_follows_appends_between_polls(tmp_path):
    """The segment's subject index grows with the data: records appended between polls
    (in the same segment and in new ones) are matched, each match delivered once, in
    order; a second group with another filter reads the same segments rightly."""
    with streamlog.open(tmp_path / "s") as log:
        t = log.topic("o", segment_bytes=16 * 1024)
        want: list[int] = []
        want_us: list[int] = []
        got: list[int] = []
        got_us: list[int] = []
        g = t.group("g", subjects=["orders.eu.*"])
        us = t.group("u", subjects=["orders.us.>"])
        for rnd in range(12):
            for i in range(97):
                s = ("orders.eu.created" if (i + rnd) % 13 == 0 else
                     "orders.us.west.paid" if i % 5 == 0 else "billing.eu.created")
                off = t.append(b"x" * 40, subject=s).offset
                (want if s.startswith("orders.eu") else want_us if s.startswith("orders.us")
                 else []).append(off)
            for grp, out in ((g, got), (us, got_us)):
                while True:
                    msgs = grp.poll(3, timeout=0)
                    if not msgs:
                        break
                    out += [m.offset for m in msgs]
                    grp.ack(msgs)
        assert got == want and got_us == want_us
        assert g.lag() == 0 and us.lag() == 0
        assert len(t._parts[0]._segments) > 3  # several segments were indexed


def test_too_many_distinct_subjects_fall_back_to_walking(tmp_path):
    """A segment with more distinct subjects than the index holds (65520) is matched by
    walking its bytes: the same records are delivered."""
    with streamlog.open(tmp_path / "s") as log:
        t = log.topic("o")
        n = 70_000
        values = [b"v"] * n
        headers = [{"subject": b"orders.%d.created" % i} for i in range(n)]
        for i in range(0, n, 10_000):
            t.append_many(values[i:i + 10_000], headers=headers[i:i + 10_000])
        g = t.group("g", subjects=["orders.*.created"])
        seen = 0
        while True:
            msgs = g.poll(5000, timeout=0)
            if not msgs:
                break
            seen += len(msgs)
            g.ack(msgs)
        assert seen == n and g.lag() == 0
        seg = next(iter(t._parts[0]._segments.values()))
        from streamlog.backends.local import codec
        assert seg.subjects is (False if codec.NATIVE else None)  # no index without the extension
        h = t.group("h", subjects=["orders.69999.created"])
        msgs = h.poll(10, timeout=0)
        assert [m.offset for m in msgs] == [n - 1]


def test_filter_after_compaction_reads_the_new_files(tmp_path, monkeypatch):
    """Segments indexed by a filtered group, then rewritten by compaction: a later
    filtered group gets exactly the matching records that compaction kept."""
    from streamlog.backends.local.storage import compaction
    monkeypatch.setattr(compaction.Background, "check", lambda self, log: None)
    with streamlog.open(tmp_path / "s") as log:
        t = log.topic("c", compact=True, segment_bytes=1024)
        for i in range(300):
            t.append(b"%d" % i, key=b"k%d" % (i % 10),
                     subject="orders.eu.created" if i % 7 == 0 else "orders.us.created")
        first = _drain(t.group("a", subjects=["orders.eu.*"]))
        assert len(first) == len(range(0, 300, 7))
        assert log.compact("c").records_removed > 0
        kept = [r.offset for r in t.read(0)
                if r.headers.get("subject") == b"orders.eu.created"]
        g = t.group("b", subjects=["orders.eu.*"])
        got = []
        while True:
            msgs = g.poll(4, timeout=0)
            if not msgs:
                break
            got += [m.offset for m in msgs]
            g.ack(msgs)
        assert got == kept and 0 < len(kept) < len(first) and g.lag() == 0


def test_filtered_groups_in_threads_while_appending(tmp_path):
    """Threads polling filtered groups of one store at once (sharing each segment's
    subject index, or walking when another thread is inside it) while another thread
    appends: each group gets exactly its matches, once, in order."""
    import threading

    n = 6000
    subjects = ["orders.eu.created", "orders.us.paid", "billing.eu.created"]
    with streamlog.open(tmp_path / "s") as log:
        t = log.topic("o", segment_bytes=32 * 1024)
        done = threading.Event()
        got: dict[str, list[int]] = {}
        errors: list[BaseException] = []

        def append():
            try:
                for i in range(n):
                    t.append(b"v", subject=subjects[i % 3])
            finally:
                done.set()

        def consume(name: str, pattern: str):
            try:
                g = t.group(name, subjects=[pattern])
                out = got[name] = []
                while True:
                    finished = done.is_set()
                    msgs = g.poll(17, timeout=0)
                    out += [m.offset for m in msgs]
                    g.ack(msgs)
                    if not msgs and finished and g.lag() == 0:
                        return
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=append)] + [
            threading.Thread(target=consume, args=(f"g{k}", p))
            for k, p in enumerate(["orders.eu.*", "*.eu.*", "orders.>", "orders.eu.*"])]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert not errors
        every = {s: [i for i in range(n) if subjects[i % 3] == s] for s in subjects}
        assert got["g0"] == got["g3"] == every["orders.eu.created"]
        assert got["g1"] == sorted(every["orders.eu.created"] + every["billing.eu.created"])
        assert got["g2"] == sorted(every["orders.eu.created"] + every["orders.us.paid"])


def test_subject_indexes_are_kept_for_a_few_segments_only(tmp_path):
    """A filtered group walking many segments keeps at most SUBJECT_INDEX_SEGMENTS subject
    indexes per partition in memory (the least recently used go), and still delivers
    exactly the matching records."""
    from streamlog._limits import SUBJECT_INDEX_SEGMENTS

    with streamlog.open(tmp_path / "s") as log:
        t = log.topic("many", partitions=1, segment_bytes=64 * 1024)
        n = 6000
        for lo in range(0, n, 500):
            t.append_many([b"x" * 64] * 500, headers=[
                {"subject": "a.hit" if i % 50 == 0 else "a.miss"} for i in range(lo, lo + 500)])
        part = t._parts[0]
        assert len(part._bases) > SUBJECT_INDEX_SEGMENTS + 2
        g = t.group("f", subjects=["a.hit"])
        got = []
        while True:
            msgs = g.poll(100, timeout=0.2)
            if not msgs:
                break
            got.extend(m.offset for m in msgs)
            g.ack(msgs)
        assert got == list(range(0, n, 50))
        held = [b for b, seg in part._segments.items() if seg.subjects]
        if _codec.NATIVE:
            assert 0 < len(held) <= SUBJECT_INDEX_SEGMENTS
        else:
            assert held == []
