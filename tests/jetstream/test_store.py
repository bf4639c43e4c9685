"""The JetStream store through ``streamlog.open``: what is particular to that backend
(stores sharing a server, URLs, replicas, server limits, header encoding, the mapping
onto streams), on real servers. The backend-neutral behaviour is the conformance
suite's (tests/conformance/test_jetstream.py)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import streamlog
from streamlog.backends.jetstream import _naming as naming
from streamlog.backends.jetstream._client import Connection, StoredMsg
from streamlog.backends.jetstream._records import partition_for_msg_id
from streamlog.backends.jetstream.log import JetStreamLog, _committed_end
from streamlog.backends.jetstream.server import NatsServer
from streamlog.backends.local.dedupe import partition_for_msg_id as local_partition_for_msg_id
from streamlog.errors import (
    ConfigMismatch,
    OffsetOutOfRange,
    ReadOnlyStore,
    RecordTooLarge,
    StoreClosed,
    StreamlogError,
    TopicNotFound,
)


@pytest.fixture
def log(js_url):
    s = streamlog.open(js_url)
    yield s
    s.close()


def _stream_config(conn: Connection, store: str, topic: str, p: int = 0) -> dict:
    return conn.run(conn.stream_info(naming.stream_name(store, topic, p))).config


# ---------------------------------------------------------------- opening and URLs


def test_open_dispatches_on_the_scheme(log, js_url, tmp_path):
    assert isinstance(log, JetStreamLog) and log.url == js_url
    local = streamlog.open(tmp_path / "d")
    try:
        assert not isinstance(local, JetStreamLog)
        again = streamlog.open(local.url)  # a file:// URL opens the same directory
        assert again.url == local.url
        again.close()
    finally:
        local.close()


@pytest.mark.parametrize("url", ["s3://bucket/x", "nats://127.0.0.1:4222/bad.name",
                                 "nats://127.0.0.1:99999/s", "nats://h/s?x=1"])
def test_malformed_urls_and_unknown_schemes_are_value_errors(url):
    with pytest.raises(ValueError):
        streamlog.open(url)


def test_without_the_nats_client_the_error_names_the_extra(monkeypatch):
    import sys

    for name in list(sys.modules):
        if name.startswith("streamlog.backends.jetstream"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "nats", None)  # as if nats-py were not installed
    with pytest.raises(ModuleNotFoundError, match=r"nats-py: pip install .*\[nats\]"):
        streamlog.open("nats://127.0.0.1:4222/s")


@pytest.mark.parametrize("options", [{"replicas": 0}, {"replicas": 6},
                                     {"durability": "sometimes"}, {"connect_timeout": 0}])
def test_bad_options_are_refused_before_connecting(options):
    # Port 1 refuses connections: a ValueError here proves nothing was attempted.
    with pytest.raises(ValueError):
        streamlog.open("nats://127.0.0.1:1/s", **options)
    with pytest.raises(TypeError):
        streamlog.open("nats://127.0.0.1:1/s", replicas="3")


def test_unreachable_server_names_the_url_and_creates_nothing(nats_server, store_name):
    with pytest.raises(StreamlogError, match=r"nats://127\.0\.0\.1:1/s: cannot connect"):
        streamlog.open("nats://127.0.0.1:1/s", connect_timeout=1.0)
    # Opening a store creates nothing on the server either: streams come with topics.
    s = streamlog.open(f"{nats_server.client_url}/{store_name}")
    s.close()
    with Connection(f"{nats_server.client_url}/{store_name}") as c:
        assert c.run(c.stream_names(naming.store_subjects(store_name))) == []


def test_durability_is_accepted_and_read_only_refuses_writes(js_url):
    with streamlog.open(js_url, durability="always") as w:
        w.topic("t").append(b"x")
    with streamlog.open(js_url, read_only=True) as r:
        t = r.existing_topic("t")
        assert [x.value for x in t.read(0)] == [b"x"]
        with pytest.raises(ReadOnlyStore):
            t.append(b"y")
        with pytest.raises(ReadOnlyStore):
            r.topic("new")
        with pytest.raises(ReadOnlyStore):
            r.delete_topic("t")
        assert r.topics() == ["t"]


def test_more_replicas_than_servers_is_refused_when_a_topic_is_created(js_url):
    with streamlog.open(js_url, replicas=3) as s:
        with pytest.raises(StreamlogError, match="cannot create topic 't'.*replicas"):
            s.topic("t", partitions=2)
        assert s.topics() == []
        with streamlog.open(js_url) as r1:  # nothing was left behind
            assert r1.topic("t", partitions=2).partitions == 2


def test_nats_options_reach_the_client(js_url):
    with streamlog.open(js_url, nats_options={"name": "my-app"}) as s:
        assert s._conn.nc.options["name"] == "my-app"


# ---------------------------------------------------------------- stores share servers


def test_stores_on_one_server_see_only_their_own_topics(nats_server, store_name):
    base = nats_server.client_url
    # "x" is a prefix of "x_y" and "x-y": a naive prefix match would mix them up.
    a = streamlog.open(f"{base}/{store_name}")
    b = streamlog.open(f"{base}/{store_name}_y")
    c = streamlog.open(f"{base}/{store_name}-y")
    try:
        a.topic("orders", partitions=2).append(b"a")
        b.topic("orders").append(b"b")
        b.topic("y.orders").append(b"b2")
        c.topic("payments")
        assert a.topics() == ["orders"]
        assert b.topics() == ["orders", "y.orders"]
        assert c.topics() == ["payments"]
        assert set(a.stats()["topics"]) == {"orders"}
        assert [r.value for r in b.existing_topic("orders").read(0)] == [b"b"]
        with pytest.raises(TopicNotFound):
            c.existing_topic("orders")
    finally:
        for s in (a, b, c):
            s.close()


def test_delete_topic_never_touches_another_stores_streams(nats_server, store_name):
    base = nats_server.client_url
    a = streamlog.open(f"{base}/{store_name}")
    b = streamlog.open(f"{base}/{store_name}_y")
    try:
        a.topic("t", partitions=3).append_many([b"1", b"2", b"3"])
        b.topic("t", partitions=3).append_many([b"1", b"2", b"3"])
        a.delete_topic("t")
        assert a.topics() == [] and b.topics() == ["t"]
        with Connection(f"{base}/{store_name}") as conn:
            assert conn.run(conn.stream_names(naming.store_subjects(store_name))) == []
            assert len(conn.run(conn.stream_names(
                naming.store_subjects(f"{store_name}_y")))) == 3
        tb = b.existing_topic("t")
        assert sum(tb.end_offset(p) for p in range(3)) == 3
    finally:
        a.close()
        b.close()


def test_long_and_dotted_topic_names_round_trip(log):
    long_name = "a." * 99 + "z"  # 199 characters: its stream name is hashed
    names = sorted([long_name, "a", "a.0", "a_0", "a-0"])
    for n in names:
        log.topic(n, partitions=2).append(n.encode(), key=b"k")
    assert log.topics() == names
    assert log.existing_topic(long_name).stream_name(0).startswith("SLH_")
    for n in names:
        t = log.existing_topic(n)
        assert [r.value for p in range(2) for r in t.read(p)] == [n.encode()]
    log.delete_topic(long_name)
    assert log.topics() == sorted(set(names) - {long_name})


def test_a_deleted_topics_handles_raise_topic_not_found(log):
    t = log.topic("gone", partitions=2)
    t.append(b"x", key=b"k")
    log.delete_topic("gone")
    with pytest.raises(TopicNotFound):
        t.end_offset(0)
    with pytest.raises(TopicNotFound):
        t.get(0, 0)
    with pytest.raises(TopicNotFound):
        t.append(b"y", key=b"k")
    with pytest.raises(TopicNotFound):
        log.delete_topic("gone")


# ---------------------------------------------------------------- the mapping


def test_topic_options_become_stream_limits(log, conn, store_name):
    log.topic("lim", partitions=2,
              retention=streamlog.Retention(max_bytes=1 << 20, max_age_s=3600),
              dedupe_window_s=60)
    for p in (0, 1):
        cfg = _stream_config(conn, store_name, "lim", p)
        assert cfg["max_bytes"] == 1 << 20 and cfg["max_age"] == 3600 * 10**9
        assert cfg["duplicate_window"] == 60 * 10**9
        assert cfg["allow_atomic"] and cfg["deny_delete"] and cfg["num_replicas"] == 1
        assert cfg["subjects"] == naming.stream_subjects(store_name, "lim", p)
    # A window of 0 turns dedupe off; the server's shortest window is 100 ms.
    t = log.topic("nodedupe", dedupe_window_s=0)
    assert t.append(b"a", msg_id="m") != t.append(b"b", msg_id="m")
    with pytest.raises(ValueError, match="0.1 s"):
        log.topic("tiny", dedupe_window_s=0.05)
    with pytest.raises(ValueError, match="0.1 s"):
        log.topic("young", retention=streamlog.Retention(max_age_s=0.05))
    assert "tiny" not in log.topics() and "young" not in log.topics()
    # A short retention brings the default dedupe window down with it.
    log.topic("short", retention=streamlog.Retention(max_age_s=30))
    assert log.existing_topic("short").config["dedupe_window_s"] == 30


def test_retention_by_size_keeps_offsets_dense(log):
    t = log.topic("small", retention=streamlog.Retention(max_bytes=2000))
    for i in range(100):
        t.append(b"%03d" % i + b"." * 50)
    start, end = t.start_offset(0), t.end_offset(0)
    assert end == 100 and 0 < start < 100
    assert [r.offset for r in t.read(0)] == list(range(start, end))
    assert [r.offset for r in t.read(0, 0, 2)] == [start, start + 1]  # below start: at start
    with pytest.raises(OffsetOutOfRange):
        t.get(0, start - 1)
    assert t.get(0, 99).value.startswith(b"099")


def test_config_is_kept_with_a_uid_per_incarnation(js_url):
    with streamlog.open(js_url) as s:
        cfg = s.topic("c", partitions=3, segment_bytes=1 << 20).config
        assert cfg["partitions"] == 3 and cfg["compact"] is False and cfg["uid"]
    with streamlog.open(js_url) as s:
        t = s.topic("c")
        assert t.config == cfg
        with pytest.raises(ConfigMismatch):
            s.topic("c", segment_bytes=1 << 21)
        with pytest.raises(ConfigMismatch):
            s.topic("c", dedupe_window_s=5)
        s.delete_topic("c")
        assert s.topic("c", partitions=3).config["uid"] != cfg["uid"]


def test_clients_creating_one_topic_at_once_get_the_same_topic(js_url):
    handles = [streamlog.open(js_url) for _ in range(4)]
    try:
        for round_, parts in enumerate(((3, 3, 3, 3), (2, 2, 5, 5))):
            barrier = threading.Barrier(len(handles))
            got: list = [None] * len(handles)

            def create(i, parts=parts, barrier=barrier, got=got, round_=round_):
                barrier.wait()
                try:
                    got[i] = handles[i].topic(f"race{round_}", partitions=parts[i]).config
                except ConfigMismatch as e:
                    got[i] = e

            threads = [threading.Thread(target=create, args=(i,)) for i in range(len(handles))]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            configs = [g for g in got if isinstance(g, dict)]
            assert len({c["uid"] for c in configs}) == 1  # one incarnation, one winner
            winner = configs[0]["partitions"]
            # Everyone who asked for the winner's partitions has the topic; the others
            # got ConfigMismatch.
            for g, want in zip(got, parts, strict=True):
                assert isinstance(g, dict) == (want == winner)
            t = handles[0].existing_topic(f"race{round_}")
            assert [t.end_offset(p) for p in range(winner)] == [0] * winner
    finally:
        for h in handles:
            h.close()


def test_compaction_is_not_implemented_here(log):
    with pytest.raises(NotImplementedError, match="JetStream"):
        log.topic("compacted", compact=True)
    assert log.topics() == []


def test_max_record_bytes_defaults_to_the_servers_max_payload(log):
    max_payload = log._conn.max_payload
    t = log.topic("big")
    assert t.config["max_record_bytes"] == max_payload
    with pytest.raises(ValueError, match=f"max_record_bytes={max_payload + 1}.*"
                                         f"max_payload={max_payload}"):
        log.topic("bigger", max_record_bytes=max_payload + 1)
    assert "bigger" not in log.topics()
    with pytest.raises(RecordTooLarge):
        t.append(b"x" * (max_payload + 1))
    # At the limit by key + value + headers, the message with streamlog's own headers
    # would exceed max_payload: refused before sending, not by the server.
    with pytest.raises(RecordTooLarge, match="max_payload"):
        t.append(b"x" * max_payload)
    t.append(b"x" * (max_payload - 200))
    assert t.end_offset(0) == 1


def test_append_many_past_the_batch_limit_sends_nothing(log):
    t = log.topic("batch", partitions=2)
    with pytest.raises(ValueError, match="1000"):
        t.append_many([b"v"] * 1001, keys=[b"same"] * 1001)
    assert t.end_offset(0) == t.end_offset(1) == 0
    pos = t.append_many([b"v%d" % i for i in range(1000)], keys=[b"same"] * 1000)
    p = pos[0].partition
    assert [q.offset for q in pos] == list(range(1000)) and t.end_offset(p) == 1000


def test_append_batch_past_the_batch_limit_sends_nothing(log):
    """An append_batch of 1,001 records is refused before anything is sent (the server's
    atomic batch limit); 1,000 land at once, densely."""
    import numpy as np

    t = log.topic("cols")
    with pytest.raises(ValueError, match="1000"):
        t.append_batch(0, streamlog.RecordBatch.from_arrays(np.zeros((1001, 4), np.uint8)))
    assert t.end_offset(0) == 0
    rows = np.arange(4000, dtype=np.uint8).reshape(1000, 4)
    assert t.append_batch(0, streamlog.RecordBatch.from_arrays(rows)) == 0
    assert t.end_offset(0) == 1000
    b = t.read_batch(0, 0, 1000)
    assert bytes(b.value_data) == rows.tobytes() and b.key_null.all()


def test_application_headers_named_like_directives_are_plain_headers(log):
    t = log.topic("hdrs")
    odd = {"Nats-Msg-Id": "dup", "Nats-Expected-Last-Sequence": "999",
           "nats-rollup": "all", "SL-Key": "not the key", "Status": "503", "a b": "c",
           "ünï": "cödé", "bin": b"\x00\r\n\xff", "spaced": " x ", "tilde": "~x", "e": "",
           "x!#$%&'*+.^_`|~-y": "v: w", "": "empty name", "a:b": "colon"}
    first = t.append(b"1", headers=odd)
    second = t.append(b"2", headers=odd)  # not deduplicated: the id is the application's
    assert (first.offset, second.offset) == (0, 1)
    assert [r.headers for r in t.read(0)] == [
        {k: v if isinstance(v, bytes) else v.encode() for k, v in odd.items()}] * 2
    assert t.get(0, 0).key is None


def test_keys_and_msg_ids_of_any_bytes_round_trip(log):
    t = log.topic("keys", partitions=4)
    for key in (b"", b"~", b" k ", b"\x00\xff", "ключ", b"plain-key"):
        pos = t.append(b"v", key=key)
        want = key.encode() if isinstance(key, str) else key
        assert t.get(pos.partition, pos.offset).key == want
    for mid in (b"\x00\xff", "x" * 500, "~abc", "with space"):
        a = t.append(b"once", msg_id=mid)
        assert t.append(b"again", msg_id=mid) == a
    assert sum(t.end_offset(p) for p in range(4)) == 10


def test_keyless_records_with_a_msg_id_land_where_the_embedded_store_puts_them(log,
                                                                              tmp_path):
    with streamlog.open(tmp_path / "local") as local:
        lt, jt = local.topic("ids", partitions=5), log.topic("ids", partitions=5)
        for i in range(40):
            mid = b"order-%d" % i
            assert jt.append(b"v", msg_id=mid).partition == lt.append(b"v", msg_id=mid).partition
            assert partition_for_msg_id(mid, 5) == local_partition_for_msg_id(mid, 5)


def test_the_record_timestamp_is_the_appends(log):
    t = log.topic("ts")
    t.append(b"old", timestamp_ms=5)
    t.append_many([b"now"])
    old, now = list(t.read(0))
    assert old.timestamp_ms == 5 and now.timestamp_ms > 1_700_000_000_000
    assert t.offset_for_time(0, 6) == 1


def test_long_reads_come_in_chunks_without_gaps(log):
    t = log.topic("long")
    for _ in range(3):
        t.append_many([b"%d" % i for i in range(250)])
    assert [r.offset for r in t.read(0)] == list(range(750))
    assert [r.offset for r in t.read(0, 100, 400)] == list(range(100, 500))
    assert [r.offset for r in t.read(0, 740, 400)] == list(range(740, 750))
    b = t.read_batch(0, 10, 600)
    assert list(b.offsets) == list(range(10, 610))
    assert [bytes(b.value(i)) for i in (0, 599)] == [b"10", b"109"]


def test_read_batch_columns(log):
    t = log.topic("cols")
    t.append_many([b"a", b"bb", b"ccc"], keys=[None, b"k", b""])
    b = t.read_batch(0, 1, 10)
    assert list(b.offsets) == [1, 2] and bytes(b.value(1)) == b"ccc"
    assert bytes(b.key(0)) == b"k" and bytes(b.key(1)) == b"" and b.key_null.tolist() == [
        False, False]
    assert len(t.read_batch(0, 3, 10)) == 0 and len(t.read_batch(0, 0, 0)) == 0


def test_reads_never_end_inside_a_batch_being_stored():
    def msg(seq, **h):
        return StoredMsg(seq, "s", b"", {k.replace("_", "-"): v for k, v in h.items()}, 0)

    # The last stored message is the 3rd of a batch without its commit: end before it.
    assert _committed_end(msg(12, Nats_Batch_Id="b", Nats_Batch_Sequence="3"), 12) == 9
    assert _committed_end(msg(12, Nats_Batch_Id="b", Nats_Batch_Sequence="3",
                              Nats_Batch_Commit="1"), 12) == 12
    assert _committed_end(msg(12), 12) == 12


@pytest.mark.parametrize("total, unfinished", [(10, 3), (2000, 3), (2000, 1000), (600, 0)])
def test_a_read_ending_inside_an_unfinished_batch_stops_before_it(log, monkeypatch, total,
                                                                  unfinished):
    """The stream as the server has it while storing a batch: its last ``unfinished``
    messages carry a batch id without the commit. Reads (short, chunked, limited)
    never return any of them."""
    t = log.topic("partial")
    msgs = [StoredMsg(seq, "s", b"%d" % seq, {"SL-Ts": "1"}, 0) for seq in range(1, total + 1)]
    for k in range(unfinished):
        msgs[total - unfinished + k] = msgs[total - unfinished + k]._replace(
            headers={"SL-Ts": "1", "Nats-Batch-Id": "b", "Nats-Batch-Sequence": str(k + 1)})
    monkeypatch.setattr(t, "_bounds", lambda p: (0, total))

    async def arange(p, offset, count, last):
        return msgs[offset:offset + min(count, last - offset)]

    async def last_message():  # the read of the last message, through the leader
        return msgs[total - 1]

    monkeypatch.setattr(t, "_arange", arange)
    monkeypatch.setattr(t, "_get_message", lambda p, seq: last_message())
    done = total - unfinished
    assert [r.offset for r in t.read(0)] == list(range(done))
    assert [r.offset for r in t.read(0, 5, 2000)] == list(range(5, done))
    assert len(t.read_batch(0, 0, total)) == done


def test_reopen_reads_what_was_written_from_another_connection(js_url):
    with streamlog.open(js_url) as s:
        t = s.topic("kept", partitions=3)
        pos = t.append_many([b"%d" % i for i in range(30)], keys=[b"%d" % i for i in range(30)])
    with streamlog.open(js_url) as s:
        t = s.existing_topic("kept")
        for i, p in enumerate(pos):
            assert t.get(p.partition, p.offset).value == b"%d" % i


# ---------------------------------------------------------------- watches


def test_a_watch_wakes_on_an_append_by_another_handle(js_url):
    a, b = streamlog.open(js_url), streamlog.open(js_url)
    try:
        ta = a.topic("w", partitions=2)
        w = ta.watch()
        seen = w.seq()
        tb = b.existing_topic("w")
        threading.Thread(target=lambda: tb.append(b"x", key=b"k")).start()
        assert w.wait(seen, 10)
        # Woken only once the record is stored: the read after the wake finds it.
        assert sum(ta.end_offset(p) for p in range(2)) == 1

        async def wait_async():
            s2 = w.seq()
            asyncio.get_running_loop().call_soon(lambda: threading.Thread(
                target=lambda: tb.append(b"y")).start())
            return await w.wait_async(s2, 10)

        assert asyncio.run(wait_async()) is True
        assert asyncio.run(w.wait_async(w.seq(), 0.01)) is False
    finally:
        a.close()
        b.close()


def test_closing_the_store_wakes_its_waiters(log):
    t = log.topic("closing")
    w = t.watch()
    seen = w.seq()
    threading.Thread(target=log.close).start()
    assert w.wait(seen, 10)
    with pytest.raises(StoreClosed):
        t.watch()


def test_a_watch_outlives_a_server_restart(tmp_path):
    """A restarted server forgets the watch's in-memory consumers; the store creates
    them again when its connection comes back, and appends wake waiters again."""
    server = NatsServer.start_single(tmp_path)
    try:
        url = f"{server.client_url}/w"
        with streamlog.open(url) as a:
            t = a.topic("w")
            w = t.watch()
            stream = t.stream_name(0)
            server.restart()
            deadline = time.monotonic() + 30
            with streamlog.open(url) as b:
                info = b._conn.api
                while b._conn.run(info(f"STREAM.INFO.{stream}"))["state"].get(
                        "consumer_count", 0) == 0:
                    assert time.monotonic() < deadline, "the watch consumer never came back"
                    w.wait(w.seq(), 0.05)  # paced by the store's own wake-ups
                tb = b.existing_topic("w")
                for i in range(2):
                    seen = w.seq()
                    tb.append(b"%d" % i)
                    assert w.wait(seen, 10)
                assert t.end_offset(0) == 2
    finally:
        server.stop()


# ---------------------------------------------------------------- operations


def test_stats_and_verify(log, conn, store_name):
    t = log.topic("ops", partitions=2)
    t.append_many([b"a", b"b", b"c"], keys=[b"1", b"2", b"3"])
    st = log.stats()["topics"]["ops"]
    assert [p["partition"] for p in st["partitions"]] == [0, 1]
    assert sum(p["records"] for p in st["partitions"]) == 3 and st["config"]["partitions"] == 2
    progress = []
    assert log.verify(lambda done, total: progress.append((done, total))) == []
    assert progress == [(1, 1)]
    conn.run(conn.delete_stream(naming.stream_name(store_name, "ops", 1)))
    (problem,) = log.verify()
    assert (problem.topic, problem.partition) == ("ops", 1) and "missing" in problem.reason


# ---------------------------------------------------------------- a 3-node cluster


def test_replicas_apply_to_every_stream_and_reads_see_writes_on_any_node(nats_cluster,
                                                                          store_name):
    url = f"{nats_cluster.url}/{store_name}"
    with streamlog.open(url, replicas=3) as s:
        t = s.topic("r3", partitions=2)
        name = t.stream_name(0)
        assert s._conn.run(s._conn.stream_info(name)).config["num_replicas"] == 3
    leader = nats_cluster.wait_stream_leader(name)
    follower = next(n for n in nats_cluster.nodes if n is not leader)
    w = streamlog.open(f"nats://{leader.host_port}/{store_name}")
    r = streamlog.open(f"nats://{follower.host_port}/{store_name}")
    try:
        tw, tr = w.existing_topic("r3"), r.existing_topic("r3")
        w_ = tr.watch()
        for i in range(50):
            seen = w_.seq()
            pos = tw.append(b"%d" % i, key=b"same")
            assert tr.end_offset(pos.partition) == pos.offset + 1
            assert [x.value for x in tr.read(pos.partition, pos.offset)] == [b"%d" % i]
            assert w_.wait(seen, 10)  # the reader's watch, on another node, wakes too
    finally:
        w.close()
        r.close()


def test_appends_with_msg_ids_ride_out_the_loss_of_the_stream_leader(nats_cluster, store_name):
    """A producer connected to a follower appends 300 records with msg ids; after 100
    the stream leader is SIGKILLed. Every append returns (resent while there is no
    leader, deduplicated by its id), at the offset it returned, once, densely."""
    url = f"{nats_cluster.url}/{store_name}"
    with streamlog.open(url, replicas=3) as s:
        name = s.topic("failover").stream_name(0)
    leader = nats_cluster.wait_stream_leader(name)
    follower = next(n for n in nats_cluster.nodes if n is not leader)
    total, positions, errors = 300, [], []
    hundred = threading.Event()
    with streamlog.open(f"nats://{follower.host_port}/{store_name}") as s:
        t = s.existing_topic("failover")

        def producer():
            try:
                for i in range(total):
                    positions.append(t.append(b"%d" % i, msg_id=f"rec-{i}"))
                    if i == 99:
                        hundred.set()
            except BaseException as e:  # reported by the test thread
                errors.append(e)
                hundred.set()

        th = threading.Thread(target=producer)
        th.start()
        assert hundred.wait(60)
        leader.kill()
        # A read while the stream may have no leader waits for one, then answers.
        assert t.end_offset(0) >= 100
        th.join(120)
        try:
            assert not errors, errors
            assert [p.offset for p in positions] == list(range(total))
            assert [r.value for r in t.read(0)] == [b"%d" % i for i in range(total)]
        finally:
            leader.restart()
            nats_cluster.wait_healthy()


def test_compaction_and_tables_say_they_are_not_on_jetstream_yet(js_url):
    """compact=True, log.compact and log.table raise NotImplementedError naming the backend."""
    with streamlog.open(js_url) as log:
        for call in (lambda: log.topic("c", compact=True), lambda: log.compact("c"),
                     lambda: log.table("c")):
            with pytest.raises(NotImplementedError, match="JetStream"):
                call()


def test_appends_and_polls_are_traced_on_jetstream(js_url):
    """With a tracer provider set, an append on a nats:// store starts a producer span and
    carries its context; the poll's receive span links to it, as on the embedded store."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tests.unit.test_tracing import _reset_globals

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_globals()
    trace.set_tracer_provider(provider)
    try:
        with streamlog.open(js_url) as log:
            t = log.topic("traced", partitions=1)
            t.append(b"x", key=b"k")
            (m,) = t.group("g").poll(1, timeout=5)
            assert "traceparent" in m.headers
        spans = exporter.get_finished_spans()
        producer = [s for s in spans if s.kind == trace.SpanKind.PRODUCER]
        consumer = [s for s in spans if s.kind == trace.SpanKind.CONSUMER]
        assert len(producer) == 1 and consumer
        assert any(link.context.span_id == producer[0].context.span_id
                   for s in consumer for link in s.links)
        assert producer[0].attributes["messaging.destination.name"] == "traced"
    finally:
        provider.shutdown()
        _reset_globals()
