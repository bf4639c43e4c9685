"""A minimal JetStream store and topic for the group tests: partition streams made with
the client's helpers, records published with their timestamp, key and headers in
headers of their own. Only what ``streamlog.backends.jetstream.groups`` uses."""

from __future__ import annotations

import base64
import itertools
import json

from streamlog._ext import Record
from streamlog._types import Position, now_ms
from streamlog.backends.jetstream import _naming as naming
from streamlog.backends.jetstream import groups
from streamlog.backends.jetstream._client import Connection, NotFound
from streamlog.errors import OffsetOutOfRange, StoreClosed, TopicNotFound
from tests.conformance.suite import kafka_partition


class StandInStore:
    def __init__(self, url: str, replicas: int = 1) -> None:
        self._conn = Connection(url)
        self.store_name = self._conn.url.store
        self.replicas = replicas
        self._closed = False
        self._closers: list = []

    def raise_if_closed(self) -> None:
        if self._closed:
            raise StoreClosed("store closed")

    def on_close(self, fn) -> None:
        self._closers.append(fn)

    def close(self) -> None:
        if self._closed:
            return
        for fn in list(self._closers):
            fn()
        self._closed = True
        self._conn.close()

    def topic(self, name: str, partitions: int = 1, **_options) -> StandInTopic:
        self.raise_if_closed()
        for p in range(partitions):
            self._conn.run(self._conn.ensure_stream(
                naming.stream_name(self.store_name, name, p),
                naming.stream_subjects(self.store_name, name, p), replicas=self.replicas,
                metadata=naming.stream_metadata(self.store_name, name, p)))
        return StandInTopic(self, name, partitions)

    def existing_topic(self, name: str) -> StandInTopic:
        self.raise_if_closed()
        n = 0
        while True:
            try:
                self._conn.run(self._conn.stream_info(naming.stream_name(self.store_name, name, n)))
            except NotFound:
                break
            n += 1
        if n == 0:
            raise TopicNotFound(name)
        return StandInTopic(self, name, n)


class StandInTopic:
    def __init__(self, store: StandInStore, name: str, partitions: int) -> None:
        self._store = store
        self._conn = store._conn
        self.name = name
        self.partitions = partitions
        self.store_name = store.store_name
        self.config = {"partitions": partitions}
        self._rr = itertools.count()

    def stream_name(self, p: int) -> str:
        return naming.stream_name(self.store_name, self.name, p)

    def subject(self, p: int) -> str:
        return naming.partition_subject(self.store_name, self.name, p)

    def append(self, value, key=None, headers=None, timestamp_ms=None, msg_id=None) -> Position:
        self._store.raise_if_closed()
        if key is not None:
            p = kafka_partition(key, self.partitions)
        elif msg_id is not None:
            p = kafka_partition(msg_id.encode(), self.partitions)
        else:
            p = next(self._rr) % self.partitions
        hdrs = {"Sl-Ts": str(timestamp_ms if timestamp_ms is not None else now_ms())}
        if key is not None:
            hdrs["Sl-Key"] = base64.b64encode(key).decode()
        if headers:
            hdrs["Sl-H"] = json.dumps({k: base64.b64encode(v if isinstance(v, bytes)
                                                           else v.encode()).decode()
                                       for k, v in headers.items()})
        ack = self._conn.run(self._conn.publish(self.subject(p), value, hdrs, msg_id=msg_id))
        return Position(p, ack.seq - 1)

    def append_many(self, values, keys=None) -> list[Position]:
        keys = keys or [None] * len(values)
        return [self.append(v, key=k) for v, k in zip(values, keys, strict=True)]

    def _record(self, p: int, stored) -> Record:
        h = stored.headers
        key = base64.b64decode(h["Sl-Key"]) if "Sl-Key" in h else None
        headers = {k: base64.b64decode(v) for k, v in json.loads(h.get("Sl-H", "{}")).items()}
        return Record(self.name, p, stored.seq - 1, int(h.get("Sl-Ts", 0)), key, stored.data,
                      headers)

    def get(self, p: int, offset: int) -> Record:
        try:
            m = self._conn.run(self._conn.get_message(self.stream_name(p), offset + 1))
        except NotFound:
            raise OffsetOutOfRange(offset) from None
        return self._record(p, m)

    def end_offset(self, p: int) -> int:
        return self._conn.run(self._conn.stream_info(self.stream_name(p))).last_seq

    def read(self, p: int, offset: int = 0, limit: int | None = None):
        end = self.end_offset(p)
        for off in range(offset, end if limit is None else min(end, offset + limit)):
            yield self.get(p, off)

    def offset_for_time(self, p: int, ts: int) -> int:
        for r in self.read(p):
            if r.timestamp_ms >= ts:
                return r.offset
        return self.end_offset(p)

    def group(self, name: str, **options) -> groups.Group:
        return groups.open_group(self, name, **options)

    def group_config(self, name: str):
        return groups.group_config(self, name)

    def groups(self) -> list[str]:
        return groups.list_groups(self)

    def delete_group(self, name: str) -> None:
        groups.delete_group(self, name)

    def append_delayed(self, value, deliver_at_ms: int, key=None, headers=None) -> Position:
        return groups.append_delayed(self, value, deliver_at_ms, key=key, headers=headers)
