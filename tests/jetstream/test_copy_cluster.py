"""`streamlog copy` to and from an R3 store on a 3-node cluster: every partition stream
replicated on three nodes, the copy resumable there as on one node, and what it copied
(records, offsets, a moved start, group positions, event-stream versions) equal after a
copy back."""

from __future__ import annotations

import streamlog
from streamlog import Retention
from tests.jetstream.test_copy import _records


def test_copy_to_an_r3_store_and_back(tmp_path, nats_cluster, store_name):
    src, back = str(tmp_path / "src"), str(tmp_path / "back")
    with streamlog.open(src) as log:
        t = log.topic("orders", partitions=3)
        for i in range(0, 6000, 1000):
            t.append_many([b"v%d" % j for j in range(i, i + 1000)],
                          keys=[b"k%d" % (j % 31) for j in range(i, i + 1000)])
        g = t.group("billing")
        assert all(g.ack(g.poll(700, timeout=1)))
        g.close()
        m = log.topic("metrics", retention=Retention(max_bytes=4096), segment_bytes=1024)
        for _ in range(300):
            m.append(b"m" * 40)
        log.apply_retention()
        log.alter_topic("metrics", retention=Retention(None, None))
        start = m.start_offset(0)
        assert start > 0
        es = log.event_store("bank")
        for i in range(12):
            es.append(f"a{i % 3}", [b"e%d" % i])
    url = f"{nats_cluster.url}/{store_name}"
    res = streamlog.copy(src, url, replicas=3)
    assert res.records == 6000 + 300 - start + 12
    with streamlog.open(url) as d:
        for name in d.topics():
            info = d.stats()["topics"][name]
            assert info  # the topic's streams are there
        orders = d.existing_topic("orders")
        conn = d._conn
        st = conn.run(conn.stream_info(orders.stream_name(0)))
        assert st.config["num_replicas"] == 3
        assert d.existing_topic("metrics").start_offset(0) == start
    assert streamlog.copy(src, url).records == 0
    streamlog.copy(url, back)
    with streamlog.open(src, read_only=True) as a, streamlog.open(back) as b:
        for name in a.topics():
            assert _records(a, name) == _records(b, name), name
        assert a.existing_topic("orders").group_positions("billing") == \
            b.existing_topic("orders").group_positions("billing")
        assert a.event_store("bank").read_all() == b.event_store("bank").read_all()
