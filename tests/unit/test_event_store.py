"""The event store view: versions, expected-version checks, reads, subscriptions, index."""

from __future__ import annotations

import shutil
import struct
import threading
import time

import pytest

import streamlog
from streamlog import ANY, NO_STREAM, Event, WrongExpectedVersion
from streamlog.backends.local import eventlog as es_mod


@pytest.fixture
def es(store):
    return store.event_store("bank")


def test_versions_start_at_zero_and_are_contiguous(es):
    """Appends return the stream's new last version; versions count from 0 per stream."""
    assert es.append("acc-1", [b"opened"]) == 0
    assert es.append("acc-1", [b"a", b"b", b"c"]) == 3
    assert es.append("acc-2", [b"opened"]) == 0
    assert [e.version for e in es.read("acc-1")] == [0, 1, 2, 3]
    assert [e.value for e in es.read("acc-1")] == [b"opened", b"a", b"b", b"c"]
    assert es.last_version("acc-1") == 3
    assert es.last_version("nobody") == NO_STREAM


def test_expected_version_checks(es):
    """NO_STREAM only for a new stream, a version only when it is the last one, ANY always."""
    assert es.append("s", [b"0"], expected_version=NO_STREAM) == 0
    with pytest.raises(WrongExpectedVersion) as info:
        es.append("s", [b"x"], expected_version=NO_STREAM)
    assert (info.value.expected, info.value.actual) == (NO_STREAM, 0)
    assert es.append("s", [b"1"], expected_version=0) == 1
    with pytest.raises(WrongExpectedVersion) as info:
        es.append("s", [b"x"], expected_version=0)
    assert (info.value.expected, info.value.actual) == (0, 1)
    with pytest.raises(WrongExpectedVersion) as info:
        es.append("new", [b"x"], expected_version=3)
    assert (info.value.expected, info.value.actual) == (3, NO_STREAM)
    assert es.append("s", [b"2"], expected_version=ANY) == 2
    assert es.append("other", [b"0"], expected_version=ANY) == 0
    assert isinstance(info.value, streamlog.StreamlogError)


def test_failed_check_writes_nothing(es):
    """A WrongExpectedVersion leaves the store exactly as it was."""
    es.append("s", [b"0", b"1"])
    before = es.read_all()
    end = es.end_position()
    with pytest.raises(WrongExpectedVersion):
        es.append("s", [b"x", b"y", b"z"], expected_version=5)
    assert es.read_all() == before
    assert es.end_position() == end
    assert es.append("s", [b"2"], expected_version=1) == 2


def test_one_append_is_one_contiguous_batch(es):
    """The events of one call get contiguous positions and versions, in order."""
    es.append("a", [b"a0"])
    es.append("b", [b"b0", b"b1", b"b2"])
    es.append("a", [b"a1"])
    events = es.read("b")
    assert [e.position for e in events] == [1, 2, 3]
    assert [e.version for e in events] == [0, 1, 2]
    assert len({e.timestamp_ms for e in events}) == 1


def test_bad_event_in_a_list_writes_nothing(es):
    """Validation of the whole list comes before any byte is written."""
    es.append("s", [b"0"])
    with pytest.raises(TypeError):
        es.append("s", [b"ok", "not bytes", b"ok"])
    with pytest.raises(TypeError):
        es.append("s", [b"ok", None])
    with pytest.raises(ValueError):
        es.append("s", [(b"ok", {"es-mine": b"x"})])
    assert [e.value for e in es.read_all()] == [b"0"]


@pytest.mark.parametrize("events,exc", [
    ([], ValueError),
    ((), ValueError),
    (b"abc", TypeError),
    ("abc", TypeError),
    (bytearray(b"x"), TypeError),
    ({"a": b"b"}, TypeError),
    (None, TypeError),
    (42, TypeError),
    (["str"], TypeError),
    ([1], TypeError),
    ([(b"v",)], TypeError),
    ([(b"v", {"h": b"x"}, 3)], TypeError),
    ([(b"v", [b"h"])], TypeError),
    ([(b"v", {1: b"x"})], TypeError),
    ([(b"v", {"h": 3})], TypeError),
    ([(b"v", {"es-stream": b"x"})], ValueError),
])
def test_bad_events_are_refused(es, events, exc):
    """Empty lists are ValueError; anything but bytes-like values or (value, headers)
    pairs is TypeError; reserved header names are ValueError."""
    with pytest.raises(exc):
        es.append("s", events)
    assert es.read_all() == []


@pytest.mark.parametrize("stream_id,exc", [
    (None, TypeError), (b"bytes", TypeError), (7, TypeError), ("", ValueError),
    ("x" * 5000, ValueError), ("\ud800", ValueError),
], ids=["none", "bytes", "int", "empty", "too-long", "surrogate"])
def test_bad_stream_ids_are_refused(es, stream_id, exc):
    """Stream ids are non-empty str of at most 4096 UTF-8 bytes."""
    with pytest.raises(exc):
        es.append(stream_id, [b"x"])
    with pytest.raises(exc):
        es.read(stream_id)


@pytest.mark.parametrize("kwargs,exc", [
    ({"expected_version": True}, TypeError),
    ({"expected_version": 1.0}, TypeError),
    ({"expected_version": "0"}, TypeError),
    ({"expected_version": -3}, ValueError),
])
def test_bad_expected_versions_are_refused(es, kwargs, exc):
    """expected_version is an int >= -2 (ANY is -2, NO_STREAM -1)."""
    with pytest.raises(exc):
        es.append("s", [b"x"], **kwargs)
    assert es.read_all() == []


def test_bad_read_arguments(es):
    """Reads refuse negative or non-int positions, versions and limits."""
    with pytest.raises(ValueError):
        es.read("s", from_version=-1)
    with pytest.raises(TypeError):
        es.read("s", from_version="0")
    with pytest.raises(ValueError):
        es.read("s", limit=-1)
    with pytest.raises(TypeError):
        es.read("s", backwards=1)
    with pytest.raises(ValueError):
        es.read_all(from_position=-1)
    with pytest.raises(TypeError):
        es.read_all(limit=1.5)
    with pytest.raises(ValueError):
        es.subscribe(-1)
    with pytest.raises(ValueError):
        es.subscribe(timeout=-1)


def test_bad_store_names(store):
    """Store names follow the topic name rules."""
    with pytest.raises(ValueError):
        store.event_store("bad name")
    with pytest.raises(TypeError):
        store.event_store(3)


def test_record_too_large(store):
    """An event bigger than the topic's max_record_bytes is refused before writing."""
    store.topic("small", max_record_bytes=1024)
    es = store.event_store("small")
    with pytest.raises(streamlog.RecordTooLarge):
        es.append("s", [b"x" * 2000])
    assert es.read_all() == []


def test_headers_round_trip(es):
    """User headers come back as dict[str, bytes]; the store's own headers are hidden."""
    es.append("s", [(b"v", {"kind": "Opened", "raw": b"\x00\x01"}), b"plain", (b"w", None)])
    events = es.read("s")
    assert events[0].headers == {"kind": b"Opened", "raw": b"\x00\x01"}
    assert events[1].headers == {}
    assert events[2].headers == {}
    assert es.read_all()[0].headers == {"kind": b"Opened", "raw": b"\x00\x01"}
    assert isinstance(events[0], Event) and events[0].stream_id == "s"


def test_read_forwards_backwards_and_limits(es):
    """from_version is a lower bound both ways; backwards returns newest first, and a
    limit then keeps the newest events."""
    for i in range(10):
        es.append("s", [b"%d" % i])
        es.append("noise", [b"n"])
    assert [e.version for e in es.read("s", 3)] == list(range(3, 10))
    assert [e.version for e in es.read("s", 3, limit=2)] == [3, 4]
    assert [e.version for e in es.read("s", backwards=True)] == list(range(9, -1, -1))
    assert [e.version for e in es.read("s", backwards=True, limit=1)] == [9]
    assert [e.version for e in es.read("s", 7, backwards=True, limit=10)] == [9, 8, 7]
    assert es.read("s", 10) == []
    assert es.read("s", limit=0) == []
    assert es.read("unknown") == []
    assert [e.position for e in es.read("s")] == list(range(0, 20, 2))


def test_read_all_is_commit_order_with_dense_positions(es):
    """read_all returns every stream's events in commit order, positions 0, 1, 2, ..."""
    es.append("a", [b"1", b"2"])
    es.append("b", [b"3"])
    es.append("a", [b"4"])
    events = es.read_all()
    assert [e.position for e in events] == [0, 1, 2, 3]
    assert [(e.stream_id, e.version) for e in events] == [("a", 0), ("a", 1), ("b", 0), ("a", 2)]
    assert [e.value for e in es.read_all(2)] == [b"3", b"4"]
    assert [e.value for e in es.read_all(1, limit=2)] == [b"2", b"3"]
    assert es.read_all(4) == []
    assert es.read_all(limit=0) == []


def test_streams_across_index_chunks_and_flushes(store):
    """Long streams (many index chunks, several LMDB flushes, a tail in memory) read
    back exactly, forwards and backwards, from any version."""
    es = store.event_store("big")
    n = (streamlog._limits.EVENT_INDEX_FLUSH_RECORDS * 2 + 300) // 10 * 10
    for i in range(0, n, 10):
        es.append("s", [b"%d" % j for j in range(i, i + 10)], expected_version=i - 1)
        es.append(f"t{i % 7}", [b"x"])
    events = es.read("s")
    assert [e.value for e in events] == [b"%d" % j for j in range(n)]
    assert [e.version for e in es.read("s", 250, limit=10)] == list(range(250, 260))
    assert [e.version for e in es.read("s", backwards=True, limit=300)] == \
        list(range(n - 1, n - 301, -1))
    assert es.last_version("s") == n - 1


def test_long_stream_ids_are_hashed_in_the_index(es):
    """Stream ids longer than an index key can hold still work, and stay distinct."""
    a = "a" * 1000
    b = "a" * 999 + "b"
    es.append(a, [b"1"])
    es.append(b, [b"2"])
    es.append(a, [b"3"], expected_version=0)
    assert [e.value for e in es.read(a)] == [b"1", b"3"]
    assert [e.value for e in es.read(b)] == [b"2"]
    assert es.read(a)[0].stream_id == a
    assert es.append("ü" * 10, [b"u"]) == 0


def test_close_and_reopen(tmp_path):
    """Events, versions and the index survive close and reopen."""
    path = tmp_path / "s"
    with streamlog.open(path) as log:
        es = log.event_store("bank")
        for i in range(50):
            es.append(f"acc-{i % 5}", [b"%d" % i])
    with streamlog.open(path) as log:
        es = log.event_store("bank")
        assert es.last_version("acc-0") == 9
        assert [e.value for e in es.read("acc-3")] == [b"%d" % i for i in range(3, 50, 5)]
        with pytest.raises(WrongExpectedVersion):
            es.append("acc-0", [b"x"], expected_version=8)
        assert es.append("acc-0", [b"x"], expected_version=9) == 10
        assert "bank" in log.topics()


def test_index_rebuilt_when_its_lmdb_entries_are_removed(tmp_path):
    """With the store's index entries deleted from LMDB, reads and version checks are
    rebuilt from the log (the segments are the source of truth)."""
    path = tmp_path / "s"
    n = streamlog._limits.EVENT_INDEX_FLUSH_RECORDS + 200
    with streamlog.open(path) as log:
        es = log.event_store("bank")
        for i in range(n):
            es.append(f"s{i % 3}", [b"%d" % i])
    with streamlog.open(path) as log:
        kv = log.kv(es_mod.KV_NAMESPACE)
        assert kv.scan(b"bank\0")  # the index was written back to LMDB
        kv.transact(lambda tx: [tx.delete(k) for k, _ in tx.scan(b"bank\0")])
        es = log.event_store("bank")
        assert es.last_version("s1") == (n - 2) // 3
        assert [e.value for e in es.read("s2")] == [b"%d" % i for i in range(2, n, 3)]
        with pytest.raises(WrongExpectedVersion):
            es.append("s0", [b"x"], expected_version=NO_STREAM)


def test_index_rebuilt_when_the_lmdb_directory_is_removed(tmp_path):
    """Removing the whole LMDB environment loses no event: the index is derived."""
    path = tmp_path / "s"
    with streamlog.open(path) as log:
        es = log.event_store("bank")
        for i in range(1500):
            es.append(f"s{i % 3}", [b"%d" % i])
    shutil.rmtree(path / "meta")
    with streamlog.open(path) as log:
        es = log.event_store("bank")
        assert es.last_version("s0") == 499
        assert [e.version for e in es.read("s1", 495)] == list(range(495, 500))
        assert es.append("s0", [b"y"], expected_version=499) == 500


def test_index_ahead_of_the_log_is_dropped(tmp_path):
    """An LMDB index claiming more records than the log holds (the log lost its tail)
    is started over from the log."""
    path = tmp_path / "s"
    with streamlog.open(path) as log:
        es = log.event_store("bank")
        for i in range(1100):
            es.append("s", [b"%d" % i])
    with streamlog.open(path) as log:
        kv = log.kv(es_mod.KV_NAMESPACE)
        raw = kv.get(b"bank\0m")
        uid, epoch, indexed_to = struct.unpack("<16s8sQ", raw)
        assert indexed_to > 0
        kv.put(b"bank\0m", struct.pack("<16s8sQ", uid, epoch, 10**6))
        es = log.event_store("bank")
        assert es.last_version("s") == 1099
        assert len(es.read("s")) == 1100


def test_index_disagreeing_with_the_log_is_rebuilt(tmp_path):
    """Damaged LMDB entries (a wrong last version, wrong positions) are caught against
    the log and the index is rebuilt from it; reads and checks stay right."""
    path = tmp_path / "s"
    n = streamlog._limits.EVENT_INDEX_FLUSH_RECORDS + 100
    with streamlog.open(path) as log:
        es = log.event_store("bank")
        for i in range(n):
            es.append(f"s{i % 2}", [b"%d" % i])
    skey0 = es_mod._skey(b"s0")
    skey1 = es_mod._skey(b"s1")
    with streamlog.open(path) as log:
        kv = log.kv(es_mod.KV_NAMESPACE)
        kv.put(b"bank\0h" + skey0, struct.pack("<Q", 3))  # wrong last version
        chunk = kv.get(b"bank\0c" + skey1 + (0).to_bytes(4, "big"))
        kv.put(b"bank\0c" + skey1 + (0).to_bytes(4, "big"), chunk[8:] + chunk[:8])  # shuffled
        es = log.event_store("bank")
        assert [e.value for e in es.read("s1")] == [b"%d" % i for i in range(1, n, 2)]
        for i in range(n, 2 * n):  # more flushes on top of the damaged entries
            es.append(f"s{i % 2}", [b"%d" % i])
        assert [e.value for e in es.read("s0")] == [b"%d" % i for i in range(0, 2 * n, 2)]
        assert es.last_version("s0") == n - 1
        with pytest.raises(WrongExpectedVersion):
            es.append("s0", [b"x"], expected_version=3)


def test_view_over_an_incompatible_topic(store):
    """A topic of the store's name with several partitions, retention or compaction
    cannot hold an event store: ConfigMismatch."""
    store.topic("multi", partitions=2)
    with pytest.raises(streamlog.ConfigMismatch):
        store.event_store("multi")
    store.topic("expiring", retention=streamlog.Retention(max_age_s=60))
    with pytest.raises(streamlog.ConfigMismatch):
        store.event_store("expiring")


def test_records_that_are_not_events_are_skipped(store):
    """Records appended to the store's topic by other means are not events."""
    es = store.event_store("bank")
    es.append("s", [b"a"])
    store.topic("bank").append(b"not an event")
    es.append("s", [b"b"])
    assert [e.value for e in es.read_all()] == [b"a", b"b"]
    assert [e.position for e in es.read_all()] == [0, 2]
    assert [e.value for e in es.read("s")] == [b"a", b"b"]


def test_deleting_the_topic_drops_the_index(store):
    """delete_topic of a store's topic removes its index; a new store of that name
    starts empty."""
    es = store.event_store("bank")
    for i in range(1100):
        es.append("s", [b"%d" % i])
    store.event_store("other").append("t", [b"x"])
    kv = store.kv(es_mod.KV_NAMESPACE)
    es_mod._index_for(store, "bank", store.topic("bank")).flush_quietly()
    assert kv.scan(b"bank\0")
    store.delete_topic("bank")
    assert kv.scan(b"bank\0") == []
    assert kv.scan(b"other\0")
    es = store.event_store("bank")
    assert es.read("s") == [] and es.last_version("s") == NO_STREAM
    assert es.append("s", [b"new"], expected_version=NO_STREAM) == 0


def test_closed_store(tmp_path):
    """Every use of a handle into a closed store raises StoreClosed."""
    log = streamlog.open(tmp_path / "s")
    es = log.event_store("bank")
    es.append("s", [b"x"])
    log.close()
    for call in (lambda: es.append("s", [b"y"]), lambda: es.read("s"),
                 lambda: es.read_all(), lambda: es.subscribe()):
        with pytest.raises(streamlog.StoreClosed):
            call()


def test_threads_racing_on_one_expected_version(store):
    """Of threads appending at the same expected version, exactly one wins each round."""
    es = store.event_store("race")
    es.append("s", [b"start"])
    rounds, workers = 30, 4
    wins = [0] * workers
    barrier = threading.Barrier(workers)

    def worker(i):
        for r in range(rounds):
            barrier.wait()
            try:
                es.append("s", [b"%d-%d" % (i, r)], expected_version=r)
                wins[i] += 1
            except WrongExpectedVersion:
                pass
            barrier.wait()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(wins) == rounds
    assert [e.version for e in es.read("s")] == list(range(rounds + 1))


def test_threads_appending_with_any_keep_versions_dense(store):
    """Concurrent ANY appends to one stream never reuse or skip a version."""
    es = store.event_store("many")

    def worker(i):
        for j in range(100):
            es.append("s", [b"%d" % i, b"%d" % j])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = es.read("s")
    assert [e.version for e in events] == list(range(800))
    assert [e.position for e in events] == list(range(800))


def test_subscribe_catches_up_then_goes_live(es):
    """A subscription yields stored events first, then events committed later."""
    es.append("a", [b"1", b"2"])
    got = []
    with es.subscribe(timeout=10) as sub:
        for e in sub:
            got.append(e)
            if len(got) == 2:
                es.append("b", [b"3"])
            if len(got) == 3:
                break
    assert [(e.stream_id, e.value, e.position) for e in got] == \
        [("a", b"1", 0), ("a", b"2", 1), ("b", b"3", 2)]


def test_subscribe_from_a_position(es):
    """from_position skips what came before it."""
    es.append("a", [b"1", b"2", b"3"])
    sub = es.subscribe(2, timeout=0.05)
    assert [e.value for e in sub] == [b"3"]
    assert sub.position == 3


def test_subscription_close_from_another_thread_ends_a_waiting_iteration(es):
    """close() wakes an iteration that is waiting for the next event."""
    sub = es.subscribe()
    done = threading.Event()
    result = []

    def consume():
        result.extend(sub)
        done.set()

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.05)
    started = time.monotonic()
    sub.close()
    assert done.wait(5)
    assert time.monotonic() - started < streamlog._limits.VIEW_POLL_S
    t.join()
    assert result == []


def test_subscribe_timeout_ends_an_idle_iteration(es):
    """With a timeout, the iteration ends after that long without an event."""
    es.append("a", [b"1"])
    assert [e.value for e in es.subscribe(timeout=0.05)] == [b"1"]


def test_event_run_takes_any_backend_s_records():
    """The extension's read loop (``_ext.event_run``) works on this store's Records and on
    any records with the same fields (another backend's), skips records between the
    wanted positions, strips the es-* headers, and refuses a record of another stream."""
    from collections import namedtuple

    from streamlog import _ext
    from streamlog.api import Event
    from streamlog.backends.local.eventlog import STREAM_HEADER, VERSION_HEADER

    Rec = namedtuple("Rec", "offset timestamp_ms value headers")

    def rec(offset, stream, version):
        return Rec(offset, 1000 + offset, b"v%d" % offset,
                   {STREAM_HEADER: stream, VERSION_HEADER: b"%d" % version, "app": b"x"})

    records = [rec(10, b"s", 0), rec(11, b"other", 0), rec(12, b"s", 1)]
    out: list = []
    run = _ext.event_run(iter(records), [10, 12], 0, 1, False, b"s", "s", 0, out, Event,
                         STREAM_HEADER, VERSION_HEADER)
    assert run == (2, 2, b"0", b"1")
    assert out == [Event("s", 0, 10, 1010, b"v10", {"app": b"x"}),
                   Event("s", 1, 12, 1012, b"v12", {"app": b"x"})]
    assert all(type(e) is Event for e in out)
    # contiguous: every record must be the stream's
    bad = [rec(10, b"s", 0), rec(11, b"other", 0)]
    assert _ext.event_run(iter(bad), [10, 11], 0, 1, True, b"s", "s", 0, [], Event,
                          STREAM_HEADER, VERSION_HEADER) is None
    # without event_sid the records themselves come back (headers stripped)
    out = []
    run = _ext.event_run(iter([rec(5, b"s", 3)]), [5], 0, 0, True, b"s", None, 3, out, Event,
                         STREAM_HEADER, VERSION_HEADER)
    assert run == (1, 4, b"3", b"3") and out[0].offset == 5 and out[0].headers == {"app": b"x"}
