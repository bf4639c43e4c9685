"""A 3-node JetStream cluster: health, reads through the stream leader, and the fault
template: SIGKILL the stream leader while publishing, lose no acknowledged publish."""

from __future__ import annotations

import threading
import time

from streamlog.backends.jetstream import _naming as naming
from streamlog.backends.jetstream._client import Connection, JetStreamError
from streamlog.errors import StreamlogError

# Longer than the 4-9 s raft election a stream needs after its leader dies.
ELECTION_BOUND_S = 30.0


def _r3_stream(conn: Connection, topic: str) -> tuple[str, str]:
    store = conn.url.store
    name = naming.stream_name(store, topic, 0)
    conn.run(conn.ensure_stream(name, naming.stream_subjects(store, topic, 0), replicas=3,
                                duplicate_window_s=120))
    return name, naming.partition_subject(store, topic, 0)


def test_cluster_has_one_meta_leader_and_every_node_is_healthy(nats_cluster):
    """The fixture's cluster: three running nodes, all /healthz 200, one agreed meta leader."""
    assert [n.healthz()[0] for n in nats_cluster.nodes] == [200, 200, 200]
    assert nats_cluster.meta_leader() in {n.name for n in nats_cluster.nodes}
    assert nats_cluster.url.count(",") == 2


def test_stream_leader_is_found_and_reads_through_it_see_every_write(nats_cluster, store_name):
    """Connected to a follower, each write is readable at once through the leader path,
    and a range read given the known last sequence is never short."""
    with Connection(f"{nats_cluster.url}/{store_name}") as c:
        name, subject = _r3_stream(c, "rw")
    leader = nats_cluster.wait_stream_leader(name)
    follower = next(n for n in nats_cluster.nodes if n is not leader)
    with Connection(f"nats://{follower.host_port}/{store_name}") as c:
        assert c.connected_port == follower.port
        assert c.run(c.stream_info(name)).leader == leader.name
        for i in range(200):
            ack = c.run(c.publish(subject, b"%d" % i))
            assert c.run(c.get_message(name, ack.seq)).data == b"%d" % i
            got = c.run(c.get_range(name, ack.seq, 1, known_last_seq=ack.seq))
            assert [m.seq for m in got] == [ack.seq]


def test_sigkill_stream_leader_while_publishing_loses_no_acked_publish(nats_cluster, store_name):
    """The fault-test template. A publisher appends 600 records with message ids,
    retrying each (same id) until acknowledged; after 100 acks the stream leader is
    SIGKILLed, a new leader is elected, the publisher finishes, the node restarts.
    Every acknowledged record is stored exactly once at its acknowledged sequence, and
    the sequences are dense."""
    total = 600
    url = f"{nats_cluster.url}/{store_name}"
    conn = Connection(url, request_timeout=2.0)
    try:
        name, subject = _r3_stream(conn, "orders.eu")
        acked: dict[int, int] = {}  # record number -> acknowledged sequence
        retries = 0
        hundred = threading.Event()
        failed: list[BaseException] = []

        def publisher() -> None:
            nonlocal retries
            try:
                for i in range(total):
                    deadline = time.monotonic() + ELECTION_BOUND_S
                    while True:
                        try:
                            ack = conn.run(conn.publish(subject, b"rec-%d" % i,
                                                        msg_id=f"rec-{i}", timeout=1.0))
                            break
                        except (TimeoutError, JetStreamError, StreamlogError):
                            retries += 1
                            if time.monotonic() > deadline:
                                raise
                            # Without a leader the server answers "no responders" at
                            # once; pace the retries instead of spinning a core.
                            time.sleep(0.05)
                    acked[i] = ack.seq
                    if len(acked) == 100:
                        hundred.set()
            except BaseException as e:  # reported by the main thread
                failed.append(e)
                hundred.set()

        t = threading.Thread(target=publisher)
        t.start()
        assert hundred.wait(ELECTION_BOUND_S)
        victim = nats_cluster.wait_stream_leader(name)
        victim.kill()
        at_kill = len(acked)
        new_leader = nats_cluster.wait_stream_leader(name, not_on=victim,
                                                     timeout=ELECTION_BOUND_S)
        t.join()
        assert not failed, failed
        assert len(acked) == total
        assert at_kill < total and new_leader is not victim  # killed mid-publishing

        victim.restart()
        nats_cluster.wait_healthy()

        last = conn.run(conn.stream_info(name)).last_seq
        stored = []
        seq = 1
        while seq <= last:
            chunk = conn.run(conn.get_range(name, seq, 250, known_last_seq=last))
            stored.extend(chunk)
            seq = chunk[-1].seq + 1
    finally:
        conn.close()

    assert [m.seq for m in stored] == list(range(1, total + 1))  # dense, nothing extra
    by_seq = {m.seq: m.data for m in stored}
    for i, seq in acked.items():
        assert by_seq[seq] == b"rec-%d" % i  # every acknowledged record where it was acked
    assert len({m.data for m in stored}) == total  # no duplicate
    # The restarted node caught up: it holds the same messages.
    with Connection(f"nats://{victim.host_port}/{store_name}") as direct:
        assert direct.connected_port == victim.port
        assert direct.run(direct.stream_info(name)).last_seq == total
