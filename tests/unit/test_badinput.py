"""Bad input is refused with TypeError/ValueError (or StoreClosed), before any byte is written."""

from __future__ import annotations

import inspect
import json
import multiprocessing
import os
import re
from collections.abc import Iterator

import pytest

import streamlog
from streamlog import (
    ConfigMismatch,
    RecordTooLarge,
    Retention,
    StoreClosed,
    StreamlogError,
    TopicNotFound,
)
from streamlog.backends.local.storage import files


def _ends(t) -> list[int]:
    return [t.end_offset(p) for p in range(t.partitions)]


def _segment_bytes_on_disk(log) -> dict[str, int]:
    """Every data byte written in the store: file sizes of closed segments + active ends."""
    out = {}
    for name, topic in log.stats()["topics"].items():
        for p in topic["partitions"]:
            out[f"{name}/{p['partition']}"] = p["bytes"]
    return out


BAD_NAMES = ["", "-a", ".a", "_a", "a b", "a/b", "a\\b", "\u00e4", "a" * 201, "a\n", "a:b",
             "..", "a*"]
GOOD_NAMES = ["a", "0", "A.b_c-1", "a" * 200, "orders.v2", "x-y_z.9"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_topic_names_are_value_errors(store, name):
    """Names outside [A-Za-z0-9][A-Za-z0-9._-]{0,199} raise ValueError and create nothing."""
    with pytest.raises(ValueError):
        store.topic(name)
    with pytest.raises(ValueError):
        store.existing_topic(name)
    with pytest.raises(ValueError):
        store.delete_topic(name)
    assert store.topics() == []
    assert os.listdir(os.path.join(store.path, files.TOPICS_DIR)) == []


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_topic_names_are_accepted(store, name):
    """Every name the pattern allows, up to 200 characters, makes a topic."""
    t = store.topic(name)
    assert t.name == name and store.topics() == [name]
    assert t.append(b"v").offset == 0


@pytest.mark.parametrize("name", [b"orders", 1, None, ["a"]])
def test_non_str_names_are_type_errors(store, name):
    """A topic name that is not a str is a TypeError."""
    with pytest.raises(TypeError):
        store.topic(name)


def _check_append_refused(t, exc, *args, **kwargs):
    before = _ends(t)
    with pytest.raises(exc):
        t.append(*args, **kwargs)
    assert _ends(t) == before


@pytest.mark.parametrize("value, exc", [
    ("text", TypeError), (123, TypeError), (1.5, TypeError), ([b"a"], TypeError),
    (object(), TypeError), (None, ValueError),
])
def test_bad_values_write_nothing(store, value, exc):
    """A str (or other non-bytes-like) value is TypeError, None on a non-compacted topic
    ValueError; end_offset is unchanged in every partition."""
    t = store.topic("vals", partitions=3)
    t.append(b"ok")
    _check_append_refused(t, exc, value)
    _check_append_refused(t, exc, value, key=b"k")
    _check_append_refused(t, exc, value, headers={"h": b"v"})


def test_bytes_like_values_and_str_keys_are_accepted(store):
    """bytearray and memoryview values are stored as bytes; a str key comes back UTF-8 bytes."""
    t = store.topic("ok")
    t.append(bytearray(b"ba"), key="cl\u00e9")
    t.append(memoryview(b"mv"), key=b"")
    recs = list(t.read(0))
    assert [(r.key, r.value) for r in recs] == [("cl\u00e9".encode(), b"ba"), (b"", b"mv")]


@pytest.mark.parametrize("kwargs, exc", [
    ({"key": 5}, TypeError),
    ({"key": 1.0}, TypeError),
    ({"key": ["k"]}, TypeError),
    ({"headers": [("a", b"b")]}, TypeError),
    ({"headers": "a=b"}, TypeError),
    ({"headers": {1: b"x"}}, TypeError),
    ({"headers": {b"name": b"x"}}, TypeError),
    ({"headers": {"n": 5}}, TypeError),
    ({"headers": {"n": None}}, TypeError),
    ({"headers": {"n" * 70000: b"x"}}, ValueError),
    ({"timestamp_ms": 1.5}, TypeError),
    ({"timestamp_ms": "1"}, TypeError),
    ({"timestamp_ms": True}, TypeError),
    ({"timestamp_ms": -1}, ValueError),
    ({"timestamp_ms": 1 << 70}, ValueError),
    ({"msg_id": 5}, TypeError),
    ({"msg_id": ""}, ValueError),
])
def test_bad_append_arguments_write_nothing(store, kwargs, exc):
    """Wrong key/header/timestamp/msg_id types are TypeError, bad values ValueError,
    and nothing is written."""
    t = store.topic("args", partitions=3)
    _check_append_refused(t, exc, b"v", **kwargs)


def test_tombstones_are_allowed_on_compacted_topics(store):
    """value=None is a tombstone on a compacted topic and reads back as None."""
    t = store.topic("c", compact=True)
    t.append(None, key=b"k")
    assert next(t.read(0)).value is None


def test_record_too_large_counts_key_value_and_headers(store):
    """RecordTooLarge (a ValueError) when key + value + headers exceed max_record_bytes;
    exactly at the limit is accepted."""
    t = store.topic("big", max_record_bytes=100, partitions=2)
    t.append(b"x" * 100)
    t.append(b"x" * 90, key=b"k" * 10)
    _check_append_refused(t, RecordTooLarge, b"x" * 101)
    _check_append_refused(t, RecordTooLarge, b"x" * 95, key=b"k" * 6)
    _check_append_refused(t, RecordTooLarge, b"x" * 95, key="k" * 6)
    # a header costs 6 bytes of lengths + its name + its value
    t.append(b"x" * 90, headers={"h": b"123"})
    _check_append_refused(t, RecordTooLarge, b"x" * 90, headers={"h": b"1234"})
    _check_append_refused(t, ValueError, bytearray(101))
    assert issubclass(RecordTooLarge, ValueError)


@pytest.mark.parametrize("partition, exc", [
    (True, TypeError), (0.0, TypeError), ("0", TypeError), (None, TypeError),
    (-1, ValueError), (3, ValueError), (1 << 40, ValueError),
])
def test_bad_partitions(store, partition, exc):
    """A bool/float/str partition is TypeError; one out of range is ValueError, on every call."""
    t = store.topic("parts", partitions=3)
    t.append(b"v")
    for call in (lambda: list(t.read(partition)), lambda: t.get(partition, 0),
                 lambda: t.start_offset(partition), lambda: t.end_offset(partition),
                 lambda: t.offset_for_time(partition, 0), lambda: t.read_batch(partition, 0, 1),
                 lambda: t.notify_seq(partition)):
        with pytest.raises(exc):
            call()


@pytest.mark.parametrize("offset, exc", [
    (-1, ValueError), (1.0, TypeError), (True, TypeError), ("0", TypeError), (None, TypeError),
])
def test_bad_offsets(store, offset, exc):
    """A negative offset is ValueError; a non-int one TypeError (read, get, read_batch)."""
    t = store.topic("offs")
    t.append(b"v")
    for call in (lambda: list(t.read(0, offset)), lambda: t.get(0, offset),
                 lambda: t.read_batch(0, offset, 1)):
        with pytest.raises(exc):
            call()


def test_bad_limits_and_timestamps_in_reads(store):
    """A negative limit or max_records, or a negative timestamp, is refused."""
    t = store.topic("lim")
    t.append(b"v")
    with pytest.raises(ValueError):
        list(t.read(0, 0, limit=-1))
    with pytest.raises(ValueError):
        t.read_batch(0, 0, -1)
    with pytest.raises(ValueError):
        t.offset_for_time(0, -5)
    with pytest.raises(TypeError):
        t.offset_for_time(0, 1.5)
    assert list(t.read(0, 0, limit=0)) == []


def test_append_many_is_validated_as_a_whole(store):
    """One bad item anywhere in a 3-partition append_many writes nothing in any partition."""
    t = store.topic("many", partitions=3, max_record_bytes=50)
    t.append_many([b"a", b"b", b"c"], keys=[b"1", b"2", b"3"])
    before = _ends(t)
    good = [b"v%d" % i for i in range(9)]
    keys = [b"key%d" % i for i in range(9)]
    cases = [
        (TypeError, dict(values=good[:8] + ["str"], keys=keys)),
        (TypeError, dict(values=good[:8] + [5], keys=keys)),
        (ValueError, dict(values=good[:8] + [None], keys=keys)),
        (RecordTooLarge, dict(values=good[:8] + [b"x" * 51], keys=keys)),
        (RecordTooLarge, dict(values=good, keys=keys[:8] + [b"k" * 49])),
        (TypeError, dict(values=good, keys=keys[:8] + [7])),
        (TypeError, dict(values=good, keys=keys, headers=[None] * 8 + [{"h": 1}])),
        (RecordTooLarge, dict(values=good, keys=keys, headers=[None] * 8 + [{"h": b"x" * 45}])),
        (ValueError, dict(values=good, keys=keys[:8])),
        (ValueError, dict(values=good, keys=keys, headers=[None] * 3)),
        (TypeError, dict(values="strings")),
        (TypeError, dict(values=b"bytes")),
        (TypeError, dict(values=5)),
    ]
    for exc, kwargs in cases:
        with pytest.raises(exc):
            t.append_many(**kwargs)
        assert _ends(t) == before, kwargs
    assert t.append_many([]) == []
    assert _ends(t) == before


def test_append_many_lands_all_records_densely(store):
    """append_many returns one Position per value, per-partition offsets dense and in order."""
    t = store.topic("many2", partitions=3)
    vals = [b"v%d" % i for i in range(30)]
    keys = [b"k%d" % (i % 7) for i in range(30)]
    pos = t.append_many(vals, keys=keys, headers=[{"i": str(i)} for i in range(30)])
    assert len(pos) == 30
    for p in range(3):
        mine = [(pp.offset, i) for i, pp in enumerate(pos) if pp.partition == p]
        assert [o for o, _ in mine] == list(range(len(mine)))
        recs = list(t.read(p))
        assert [(r.value, r.key, r.headers) for r in recs] == [
            (vals[i], keys[i], {"i": str(i).encode()}) for _, i in mine]


@pytest.mark.parametrize("option, first, second", [
    ("partitions", 2, 3),
    ("segment_bytes", 4096, 8192),
    ("max_record_bytes", 100, 200),
    ("retention", Retention(max_bytes=10_000), Retention(max_bytes=20_000)),
    ("retention", Retention(max_age_s=60), Retention(max_age_s=61)),
    ("dedupe_window_s", 10, 20),
    ("compact", True, False),
])
def test_config_mismatch_on_reopen(tmp_path, option, first, second):
    """Reopening a topic with an option that differs from the stored one raises
    ConfigMismatch (a ValueError) and changes nothing; the same value or None is fine,
    in this process and after the store is reopened."""
    path = tmp_path / "s"
    with streamlog.open(path) as log:
        t = log.topic("cfg", **{option: first})
        t.append(b"v", key=b"k") if option != "compact" else t.append(b"v", key=b"k")
        with pytest.raises(ConfigMismatch):
            log.topic("cfg", **{option: second})
        assert log.topic("cfg", **{option: first}).partitions == t.partitions
        assert log.topic("cfg").config[option] == t.config[option]
    with streamlog.open(path) as log:
        with pytest.raises(ConfigMismatch) as ei:
            log.topic("cfg", **{option: second})
        assert isinstance(ei.value, ValueError) and option in str(ei.value)
        t = log.topic("cfg", **{option: first})
        assert sum(t.end_offset(p) for p in range(t.partitions)) == 1


@pytest.mark.parametrize("kwargs, exc", [
    ({"partitions": 0}, ValueError), ({"partitions": -1}, ValueError),
    ({"partitions": True}, TypeError), ({"partitions": 1.0}, TypeError),
    ({"partitions": 100_000}, ValueError),
    ({"segment_bytes": 10}, ValueError), ({"segment_bytes": 1 << 40}, ValueError),
    ({"segment_bytes": "64MB"}, TypeError),
    ({"max_record_bytes": 0}, ValueError),
    ({"retention": (100, None)}, TypeError), ({"retention": 100}, TypeError),
    ({"retention": (100, None)}, TypeError),
    ({"dedupe_window_s": 61, "retention": Retention(max_age_s=60)}, ValueError),
    ({"dedupe_window_s": -1}, ValueError), ({"dedupe_window_s": "x"}, TypeError),
    ({"compact": 1}, TypeError),
])
def test_bad_topic_options(store, kwargs, exc):
    """Bad topic options are refused before the topic is created."""
    with pytest.raises(exc):
        store.topic("opts", **kwargs)
    assert store.topics() == []


@pytest.mark.parametrize("kwargs, exc", [
    ({"max_bytes": -1}, ValueError), ({"max_bytes": 0}, ValueError),
    ({"max_age_s": -1}, ValueError), ({"max_age_s": 0}, ValueError),
    ({"max_age_s": float("nan")}, ValueError), ({"max_age_s": float("inf")}, ValueError),
    ({"max_bytes": 1.5}, TypeError), ({"max_bytes": "1GB"}, TypeError),
    ({"max_bytes": True}, TypeError), ({"max_age_s": "1d"}, TypeError),
    ({"max_age_s": False}, TypeError),
])
def test_retention_is_checked_when_it_is_made(kwargs, exc):
    """Retention(...) refuses a bad limit at construction: ValueError for a value out of
    range (zero included: None means no limit), TypeError for a wrong type (bools are not
    numbers here); ``_replace`` checks too."""
    with pytest.raises(exc):
        Retention(**kwargs)
    with pytest.raises(exc):
        Retention(max_bytes=1, max_age_s=1)._replace(**kwargs)


def test_good_retention_values():
    """Ints, floats and None make a Retention that still is a plain (max_bytes, max_age_s)."""
    assert Retention() == (None, None)
    assert Retention(1, 0.5) == (1, 0.5)
    assert Retention(max_age_s=7 * 86400).max_bytes is None


def test_dedupe_window_longer_than_max_age_is_refused(store):
    """dedupe_window_s longer than the retention's max_age_s is a ValueError naming both,
    whether both come in one call or the window comes for an existing topic; nothing is
    created. Without an explicit window, a new topic's default window shrinks to
    max_age_s, and a window equal to it is fine."""
    with pytest.raises(ValueError) as ei:
        store.topic("d", retention=Retention(max_age_s=30), dedupe_window_s=31)
    assert "dedupe_window_s" in str(ei.value) and "max_age_s" in str(ei.value)
    assert store.topics() == []
    t = store.topic("d", retention=Retention(max_age_s=30))
    assert t.config["dedupe_window_s"] == 30
    assert store.topic("d", dedupe_window_s=30).config["dedupe_window_s"] == 30
    with pytest.raises((ValueError, ConfigMismatch)):
        store.topic("d", dedupe_window_s=31)
    assert store.topic("e", retention=Retention(max_age_s=3600), dedupe_window_s=120)


def test_path_that_is_a_regular_file(tmp_path):
    """Opening a regular file raises a StreamlogError that names the path."""
    f = tmp_path / "afile"
    f.write_bytes(b"not a store")
    with pytest.raises(StreamlogError) as ei:
        streamlog.open(f)
    assert str(f) in str(ei.value)
    assert f.read_bytes() == b"not a store"


def test_path_types(tmp_path):
    """A str or os.PathLike path opens; anything else is a TypeError."""
    with streamlog.open(str(tmp_path / "a")) as log:
        assert os.path.isdir(log.path)
    with streamlog.open(tmp_path / "b") as log:
        assert os.path.isdir(log.path)
    with pytest.raises(TypeError):
        streamlog.open(5)
    with pytest.raises(TypeError):
        streamlog.open(None)


def test_directory_of_a_newer_format_is_refused(tmp_path):
    """A directory whose streamlog.json names a bigger format raises a StreamlogError naming
    the path, and the directory is left as it was."""
    d = tmp_path / "newer"
    with streamlog.open(d) as log:
        log.topic("t").append(b"v")
    fmt = d / files.FORMAT_FILE
    info = json.loads(fmt.read_text())
    info["format"] = files.FORMAT_VERSION + 1
    fmt.write_text(json.dumps(info))
    before = sorted(os.listdir(d))
    with pytest.raises(StreamlogError) as ei:
        streamlog.open(d)
    assert str(d) in str(ei.value)
    assert sorted(os.listdir(d)) == before
    assert json.loads(fmt.read_text())["format"] == files.FORMAT_VERSION + 1


def test_unreadable_format_file_is_refused(tmp_path):
    """A damaged streamlog.json is a StreamlogError naming it, not a crash."""
    d = tmp_path / "damaged"
    streamlog.open(d).close()
    (d / files.FORMAT_FILE).write_text("{not json")
    with pytest.raises(StreamlogError) as ei:
        streamlog.open(d)
    assert files.FORMAT_FILE in str(ei.value)


@pytest.mark.parametrize("url, scheme", [("kafka://broker:9092/x", "kafka"),
                                        ("s3://bucket/x", "s3")])
def test_remote_schemes_are_value_errors_naming_the_scheme(tmp_path, monkeypatch, url,
                                                           scheme):
    """open() of a URL whose scheme no backend serves raises ValueError naming the scheme
    (and creates nothing); nats:// and tls:// open JetStream stores."""
    monkeypatch.chdir(tmp_path)  # restored after: later tests' subprocesses import from here
    with pytest.raises(ValueError) as ei:
        streamlog.open(url)
    assert scheme in str(ei.value)
    assert os.listdir(tmp_path) == []


def test_bad_durability(tmp_path):
    """An unknown durability mode is ValueError; a non-str one TypeError."""
    with pytest.raises(ValueError):
        streamlog.open(tmp_path / "s", durability="sometimes")
    with pytest.raises(TypeError):
        streamlog.open(tmp_path / "s", durability=1)


def test_store_closed_for_every_handle(tmp_path):
    """After close, the Log, its Topic handles and their iterators raise StoreClosed."""
    log = streamlog.open(tmp_path / "s")
    t = log.topic("t", partitions=2)
    for i in range(3000):
        t.append(b"v%d" % i, key=b"k")
    p = t.append(b"x", key=b"k").partition
    not_started = t.read(p)
    started = t.read(p)
    assert next(started).offset == 0
    log.close()
    calls = [
        lambda: log.topic("t"), lambda: log.topic("new"), log.topics,
        lambda: log.existing_topic("t"), lambda: log.delete_topic("t"), log.stats,
        log.verify, log.apply_retention, lambda: log.kv("x"),
        lambda: t.append(b"v"), lambda: t.append(b"v", key=b"k"),
        lambda: t.append(b"v", headers={"h": b"1"}), lambda: t.append_many([b"a", b"b"]),
        lambda: list(t.read(0)), lambda: t.get(p, 0), lambda: t.start_offset(0),
        lambda: t.end_offset(0), lambda: t.offset_for_time(0, 0),
        lambda: t.read_batch(0, 0, 10), t.flush, lambda: t.notify_seq(0),
        lambda: next(not_started), lambda: next(started),
    ]
    for call in calls:
        with pytest.raises(StoreClosed):
            call()


def test_close_is_idempotent_and_a_context_manager_closes(tmp_path):
    """close() twice is fine; leaving a with-block closes the store."""
    log = streamlog.open(tmp_path / "s")
    log.close()
    log.close()
    with streamlog.open(tmp_path / "s") as log2:
        t = log2.topic("t")
        t.append(b"v")
    with pytest.raises(StoreClosed):
        t.append(b"v")
    log2.close()
    with streamlog.open(tmp_path / "s") as log3:
        assert log3.topic("t").end_offset(0) == 1


def test_topic_not_found(store):
    """Deleting or opening a missing topic raises TopicNotFound (a LookupError)."""
    with pytest.raises(TopicNotFound):
        store.delete_topic("missing")
    with pytest.raises(LookupError):
        store.existing_topic("missing")
    store.topic("t")
    store.delete_topic("t")
    with pytest.raises(TopicNotFound):
        store.delete_topic("t")
    assert store.topics() == []


def _handle_calls(t):
    return [lambda: t.append(b"v"), lambda: t.append(b"v", key=b"k"),
            lambda: t.append(b"v", headers={"h": b"x"}), lambda: t.append_many([b"a"]),
            lambda: list(t.read(0)), lambda: t.get(0, 0), lambda: t.end_offset(0),
            lambda: t.start_offset(0), lambda: t.read_batch(0, 0, 5),
            lambda: t.offset_for_time(0, 0)]


def test_handle_to_a_topic_deleted_in_this_process(store):
    """A Topic handle whose topic was deleted raises TopicNotFound on every call."""
    t = store.topic("gone", partitions=2)
    t.append(b"v")
    store.delete_topic("gone")
    for call in _handle_calls(t):
        with pytest.raises(TopicNotFound):
            call()
    # the name can be used again, and starts empty
    t2 = store.topic("gone")
    assert t2.partitions == 1 and t2.end_offset(0) == 0
    for call in _handle_calls(t):
        with pytest.raises(TopicNotFound):
            call()


def _delete_in_child(path: str, name: str) -> None:
    with streamlog.open(path) as log:
        log.delete_topic(name)


def test_handle_to_a_topic_deleted_by_another_process(tmp_path):
    """A handle open in this process raises TopicNotFound once another process deleted it."""
    path = str(tmp_path / "s")
    with streamlog.open(path) as log:
        t = log.topic("gone", partitions=2)
        t.append(b"v")
        ctx = multiprocessing.get_context("fork")
        child = ctx.Process(target=_delete_in_child, args=(path, "gone"))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        for call in _handle_calls(t):
            with pytest.raises(TopicNotFound):
                call()
        assert log.topics() == []


# ----------------------------------------------- every handle of a closed store
_PLAUSIBLE = {
    "value": b"v", "values": [b"a", b"b"], "key": b"k", "headers": None, "partition": 0,
    "offset": 0, "limit": 1, "name": "t", "max_records": 1, "timestamp_ms": 0, "seen": 0,
    "timeout": 0, "delay_s": 0, "error": None, "msgs": [], "stream_id": "s",
    "events": [b"e"], "expected_version": -1, "from_version": 0, "from_position": 0,
    "build": lambda end: (b"", 0), "handler": lambda m: b"", "progress": None,
    "dry_run": True, "start": "earliest", "mode": "shared", "fn": lambda: None,
    "deliver_at_ms": 0,
    "to": "earliest",
    "topic": "t", "expected_offset": 0,
    "batch": streamlog.RecordBatch.from_arrays([b"v"]), "records": [], "count": 1,
}
# Closing is idempotent: a handle may be closed (or stopped) after its store.
_LIFECYCLE = {"close", "stop"}


def _public_methods(obj) -> list[str]:
    names = []
    for n in dir(obj):
        if n.startswith("_") or n in _LIFECYCLE:
            continue
        if isinstance(inspect.getattr_static(type(obj), n, None), property):
            continue
        if callable(getattr(obj, n)):
            names.append(n)
    return names


def _argument_sets(fn) -> list[tuple[tuple, dict]]:
    """(args, kwargs): plausible ones, garbage for every parameter, and the empty ones
    (``g.ack([])``)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a C-level method: its docstring names no signature
        return [((b"v",), {}), ((object(),), {}), ((b"v",), {"key": object()})]
    required = [p for p in params if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    missing = [p.name for p in required if p.name not in _PLAUSIBLE]
    assert not missing, f"add plausible values for {missing} of {fn}"
    plausible = tuple(_PLAUSIBLE[p.name] for p in required)
    garbage_args = tuple(object() for p in params
                         if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    garbage_kwargs = {p.name: object() for p in params if p.kind is p.KEYWORD_ONLY}
    return [(plausible, {}), (garbage_args, garbage_kwargs),
            (tuple([] if isinstance(v, list) else v for v in plausible), {})]


@pytest.fixture
def closed_handles(tmp_path):
    """One handle of every kind, each used once, then the store closed under them."""
    log = streamlog.open(tmp_path / "s")
    t = log.topic("t", partitions=2)
    t.append_many([b"a", b"b", b"c", b"d"])
    g = t.group("g", ack_wait_s=60)
    m = g.poll(max_records=1, timeout=5)[0]
    q = log.queue("q")
    q.put(b"x")
    qm = q.get(timeout=5)
    ps = log.pubsub("ps")
    ps.publish(b"x")
    sub = ps.subscribe("sub")
    rpc = log.rpc("rpc")
    es = log.event_store("es")
    es.append("s", [b"e1", b"e2"])
    es_sub = es.subscribe(0, timeout=0)
    next(es_sub)  # one event buffered: a closed store must not hand it out either
    tbl = log.table("tbl")
    tbl.put("k", b"v")
    handles = {"Log": log, "Topic": t, "Group": g, "Message": m, "QueueMessage": qm,
               "Queue": q, "PubSub": ps, "Subscription": sub, "Rpc": rpc,
               "EventStore": es, "EventStoreSubscription": es_sub, "Table": tbl}
    log.close()
    return handles


_HANDLE_KINDS = ["Log", "Topic", "Group", "Message", "QueueMessage", "Queue", "PubSub",
                 "Subscription", "Rpc", "EventStore", "EventStoreSubscription", "Table"]


@pytest.mark.parametrize("kind", _HANDLE_KINDS)
def test_every_method_of_every_handle_of_a_closed_store_raises_store_closed(closed_handles,
                                                                           kind):
    """After close, each public method of each handle raises StoreClosed, whatever its
    arguments: plausible ones, garbage ones, and empty ones such as ``g.ack([])``.
    Iterators refuse their next item too. ``close()``/``stop()`` stay idempotent."""
    h = closed_handles[kind]
    failures = []
    methods = _public_methods(h)
    assert methods or isinstance(h, Iterator), kind
    for n in methods:
        for args, kwargs in _argument_sets(getattr(h, n)):
            try:
                out = getattr(h, n)(*args, **kwargs)
                if isinstance(out, Iterator):
                    next(out)
            except StoreClosed:
                continue
            except BaseException as e:  # noqa: BLE001 - collected and reported below
                failures.append(f"{kind}.{n}{args!r} {kwargs!r}: {type(e).__name__}: {e}")
            else:
                failures.append(f"{kind}.{n}{args!r} {kwargs!r} returned {out!r}")
    if isinstance(h, Iterator):
        try:
            next(h)
            failures.append(f"next({kind}) returned an item")
        except StoreClosed:
            pass
        except BaseException as e:  # noqa: BLE001
            failures.append(f"next({kind}): {type(e).__name__}: {e}")
    for n in _LIFECYCLE:
        if hasattr(h, n):
            getattr(h, n)()  # idempotent, never StoreClosed
    assert not failures, "\n".join(failures)



# Every duration of the API and the range it accepts: (zero allowed, inf allowed).
# A wait (timeout) may be unlimited; a delay, a lease, a window or an age must be finite;
# a lease, a request's deadline and an age must also be > 0.
_SECONDS_PARAMS = {
    "dedupe_window_s": (True, False),
    "Retention max_age_s": (False, False),
    "ack_wait_s": (False, False),
    "backoff_s[0]": (True, False),
    "group poll timeout": (True, True),
    "nack delay_s": (True, False),
    "defer delay_s": (True, False),
    "queue put delay_s": (True, False),
    "queue get timeout": (True, True),
    "pubsub listen timeout": (True, True),
    "rpc request timeout": (False, False),
    "event store subscribe timeout": (True, True),
}


def _seconds_call(log, which: str, v) -> None:
    """Call the API that takes the duration ``which`` with ``v``. Where a wait is asked
    for, something is there to take first, so an accepted unlimited wait returns."""
    if which == "dedupe_window_s":
        log.topic("d", dedupe_window_s=v)
    elif which == "Retention max_age_s":
        Retention(max_age_s=v)
    elif which.startswith("queue"):
        q = log.queue("q")
        if "put" in which:
            q.put(b"x", delay_s=v)
        else:
            q.put(b"x")
            q.get(timeout=v)
    elif which == "pubsub listen timeout":
        log.pubsub("ps").subscribe("s").listen(timeout=v)  # checked before iterating
    elif which == "rpc request timeout":
        log.rpc("rq").request(b"x", timeout=v)
    elif which == "event store subscribe timeout":
        log.event_store("es").subscribe(timeout=v).close()
    else:
        t = log.topic("g")
        t.append(b"x")
        if which == "ack_wait_s":
            t.group("a", ack_wait_s=v)
        elif which == "backoff_s[0]":
            t.group("b", backoff_s=[v])
        elif which == "group poll timeout":
            t.group("p").poll(1, timeout=v)
        else:
            (m,) = t.group("n").poll(1, timeout=0)
            m.nack(delay_s=v) if which.startswith("nack") else m.defer(v)


@pytest.mark.parametrize("which", sorted(_SECONDS_PARAMS))
@pytest.mark.parametrize("v", [-1, float("nan"), True, "1", 0, float("inf")],
                         ids=["neg", "nan", "bool", "str", "zero", "inf"])
def test_every_duration_is_checked_alike(tmp_path, which, v):
    """Every parameter in seconds goes through one check: bools and strs are TypeErrors,
    negatives and NaN ValueErrors, zero and infinity accepted only where documented, and
    each message names the parameter and its range."""
    allow_zero, allow_inf = _SECONDS_PARAMS[which]
    what = which if which.startswith("Retention") else which.split()[-1]
    log = streamlog.open(tmp_path / "s")
    try:
        if isinstance(v, bool | str):
            with pytest.raises(TypeError, match=rf"^{re.escape(what)} must be a number of "
                                                r"seconds"):
                _seconds_call(log, which, v)
        elif (v == 0 and allow_zero) or (v == float("inf") and allow_inf):
            _seconds_call(log, which, v)
        else:
            finite = "" if allow_inf else "finite "
            limit = ">= 0" if allow_zero else "> 0"
            with pytest.raises(ValueError, match=rf"^{re.escape(what)} must be a {finite}"
                                                 rf"number of seconds {re.escape(limit)}"):
                _seconds_call(log, which, v)
    finally:
        log.close()
