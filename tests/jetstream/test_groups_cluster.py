"""Consumer groups on a 3-node cluster: the stream leader, or the node the client is
connected to, SIGKILLed while a group consumes; every record is acknowledged by the
group in the end, none lost."""

from __future__ import annotations

import threading
import time

from streamlog.errors import StreamlogError
from tests.jetstream.test_groups import open_js_store

ELECTION_BOUND_S = 60.0


def _consume_through_a_kill(nats_cluster, store_name, victim) -> None:
    """Drain 300 records with one group on an R3 store, SIGKILLing ``victim(store,
    topic)`` after 100 acks and restarting it 3 s later; every record ends acked."""
    total = 300
    s = open_js_store(f"{nats_cluster.url}/{store_name}", replicas=3)
    try:
        t = s.topic("jobs")
        t.append_many([b"%d" % i for i in range(total)])
        g = t.group("g", ack_wait_s=2, max_deliver=100)
        seen: dict[bytes, int] = {}
        acked = 0
        killed = restart = None
        deadline = time.monotonic() + ELECTION_BOUND_S
        while True:
            assert time.monotonic() < deadline, (len(seen), total)
            try:
                ms = g.poll(20, timeout=1)
                for m in ms:
                    seen[m.value] = max(seen.get(m.value, 0), m.delivery_count)
                acked += sum(g.ack(ms))
                if not ms and len(seen) == total and g.lag() == 0:
                    break
            except (TimeoutError, StreamlogError):
                continue  # the election: the records come again
            if killed is None and acked >= 100:
                killed = victim(s, t)
                killed.kill()
                restart = threading.Timer(3.0, killed.restart)
                restart.start()
        assert restart is not None
        restart.join()
        assert sorted(seen) == sorted(b"%d" % i for i in range(total))
        assert g.lag() == 0
    finally:
        s.close()


def test_sigkill_of_the_stream_leader_while_a_group_consumes(nats_cluster, store_name):
    _consume_through_a_kill(nats_cluster, store_name,
                            lambda s, t: nats_cluster.wait_stream_leader(t.stream_name(0)))


def test_sigkill_of_the_node_the_client_uses_while_a_group_consumes(nats_cluster, store_name):
    _consume_through_a_kill(nats_cluster, store_name,
                            lambda s, t: nats_cluster.node_for_port(s._conn.connected_port))
