"""Tracking records of event-processing applications on the embedded store.

``LocalTrackingLog`` of application ``name`` keeps, per upstream application,
the highest notification id processed. A tracking record written alone is
one record of the topic ``<name>.tracking``; one written with events rides
in the headers of the first event of their batch in the event log
``<name>.events``, so both land or neither does. Every decision on a new
record is made under the tracking topic's append lock, so two writers of
the same id (threads or processes) never both succeed.

What each process knows is derived from the two logs (read incrementally)
and checkpointed to the LMDB namespace ``eventsourcing`` (key
``<name>\\0tracking``); a lost or stale checkpoint only costs a longer
catch-up.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from streamlog._types import now_ms
from streamlog.api import EncodedHeaders, EventLog, NewEventFields, Watch
from streamlog.backends.local.codec import encode_batch
from streamlog.errors import StoreClosed, WrongExpectedVersion

__all__ = ["KV_NAMESPACE", "LocalTrackingLog", "drop_topic"]

KV_NAMESPACE = "eventsourcing"
TRACKING_APP_HEADER = "tracking-app"
TRACKING_ID_HEADER = "tracking-id"
_HB_TRACKING_APP = TRACKING_APP_HEADER.encode()
_HB_TRACKING_ID = TRACKING_ID_HEADER.encode()
# Tracking state is checkpointed to LMDB after this many records were read
# past the last checkpoint (it is derived from the logs: a lost checkpoint
# only costs a longer catch-up).
_TRACKING_CHECKPOINT_RECORDS = 1024


class _TrackingState:
    """This process's knowledge of the tracking records of ``<name>``: the maximum
    notification id per upstream application, read from the tracking topic and
    from the tracking headers of the events topic, checkpointed to LMDB.

    Thread-safe through ``lock``. Decisions that depend on it are made under the
    tracking topic's append lock.
    """

    def __init__(self, log: Any, name: str) -> None:
        self.t_topic = log.topic(f"{name}.tracking", partitions=1)
        self.e_topic = log.event_log(f"{name}.events")._topic
        self.kv = log.kv(KV_NAMESPACE)
        self.key = name.encode() + b"\0tracking"
        self.uids = [self.t_topic.config.get("uid"), self.e_topic.config.get("uid")]
        self.lock = threading.Lock()
        self.maxes: dict[str, int] = {}
        self.t_end = 0
        self.e_end = 0
        self.loaded = False
        self.unsaved = 0

    def sync(self, t_end: int | None = None) -> None:
        """Read the tracking records appended since the last sync. Caller holds lock."""
        if t_end is None:
            t_end = self.t_topic.end_offset(0)
        e_end = self.e_topic.end_offset(0)
        if not self.loaded:
            self._load(t_end, e_end)
        if t_end < self.t_end or e_end < self.e_end:  # a log lost its tail: read again
            self.maxes, self.t_end, self.e_end = {}, 0, 0
        self.unsaved += self._read(self.t_topic, self.t_end, t_end)
        self.t_end = t_end
        self.unsaved += self._read(self.e_topic, self.e_end, e_end)
        self.e_end = e_end
        if self.unsaved >= _TRACKING_CHECKPOINT_RECORDS:
            self._save()

    def _read(self, topic: Any, start: int, end: int) -> int:
        if end <= start:
            return 0
        maxes = self.maxes
        for rec in topic.read(0, start, end - start):
            h = rec.headers
            app = h.get(TRACKING_APP_HEADER)
            if app is not None:
                app_s = app.decode("utf-8")
                nid = int(h[TRACKING_ID_HEADER])
                if maxes.get(app_s, -1) < nid:
                    maxes[app_s] = nid
        return end - start

    def _load(self, t_end: int, e_end: int) -> None:
        self.loaded = True
        raw = self.kv.get(self.key)
        if raw is None:
            return
        try:
            cp = json.loads(raw)
            if cp["uids"] == self.uids and cp["t"] <= t_end and cp["e"] <= e_end:
                self.maxes = {str(k): int(v) for k, v in cp["max"].items()}
                self.t_end, self.e_end = int(cp["t"]), int(cp["e"])
        except (ValueError, KeyError, TypeError):
            pass  # a checkpoint we cannot use: read the logs from the start

    def _save(self) -> None:
        cp = {"uids": self.uids, "t": self.t_end, "e": self.e_end, "max": self.maxes}
        raw = json.dumps(cp, separators=(",", ":")).encode()
        key = self.key

        def fn(tx: Any) -> None:
            cur = tx.get(key)
            if cur is not None:
                try:
                    old = json.loads(cur)
                    if old.get("uids") == cp["uids"] and \
                            (old["t"] > cp["t"] or old["e"] > cp["e"]):
                        return  # a fresher checkpoint is there already
                except (ValueError, KeyError, TypeError):
                    pass
            tx.put(key, raw)

        self.kv.transact(fn)
        self.unsaved = 0


def drop_topic(tx: Any, topic: str) -> None:
    """Drop the tracking checkpoint of a deleted tracking topic (``tx``: a transaction
    on the ``eventsourcing`` namespace, the one that deletes the topic)."""
    if topic.endswith(".tracking"):
        tx.delete(topic[:-len(".tracking")].encode() + b"\0tracking")


class LocalTrackingLog:
    """The tracking records of application ``name``: one per (Log, name) in a process
    (``Log.tracking_log``). Thread- and process-safe."""

    def __init__(self, log: Any, name: str) -> None:
        self._log = log
        self.name = name
        self._state = _TrackingState(log, name)
        # the topic of tracking records written alone (tests read it directly)
        self.t_topic = self._topic = self._state.t_topic

    def __repr__(self) -> str:
        return f"LocalTrackingLog({self.name!r})"

    def _check(self, application: str, notification_id: int,
               t_end: int) -> WrongExpectedVersion | None:
        """The error to raise unless ``notification_id`` is above the recorded one (the
        tracking log read up to ``t_end``, under its append lock)."""
        st = self._state
        with st.lock:
            st.sync(t_end)
            current = st.maxes.get(application)
        if current is not None and current >= notification_id:
            return WrongExpectedVersion(notification_id, current, application)
        return None

    @staticmethod
    def _headers(application: str, notification_id: int) -> EncodedHeaders:
        return [(_HB_TRACKING_APP, application.encode("utf-8")),
                (_HB_TRACKING_ID, b"%d" % notification_id)]

    def record(self, application: str, notification_id: int,
               headers: EncodedHeaders | None = None) -> None:
        """Record ``notification_id`` of ``application`` (``headers`` on the same record).

        WrongExpectedVersion(notification_id, recorded, application) unless it
        is above the recorded one; nothing is written then."""
        extra = list(headers) if headers else []
        for hname, _ in extra:
            if hname in (_HB_TRACKING_APP, _HB_TRACKING_ID):
                raise ValueError(f"header name {hname.decode()!r} is reserved for tracking")

        def build(end: int) -> tuple[bytes | None, int, int, Any]:
            err = self._check(application, notification_id, end)
            if err is not None:
                return None, 0, 0, err
            ts = now_ms()
            data = encode_batch(None, [b""], [self._headers(application, notification_id)
                                              + extra], [ts])
            return data, 1, ts, None

        base, result = self._topic.append_with(0, build)
        if base < 0:
            raise result

    def commit_with(self, events: EventLog, application: str, notification_id: int,
                    new_events: Sequence[NewEventFields], expected: Mapping[str, int]) -> int:
        """Commit ``new_events`` to ``events`` with the tracking record in the first
        event's headers, deciding under the tracking topic's append lock (no other
        tracking record is written until the events are); returns the first
        position. WrongExpectedVersion from either check, nothing written."""
        tracking = self._headers(application, notification_id)

        def build(end: int) -> tuple[bytes | None, int, int, Any]:
            err = self._check(application, notification_id, end)
            if err is not None:
                return None, 0, 0, err
            try:
                return None, 0, 0, events.commit(new_events, expected, tracking)
            except WrongExpectedVersion as e:
                return None, 0, 0, e

        _, result = self._topic.append_with(0, build)
        if isinstance(result, BaseException):
            raise result
        # The tracking record went to the events topic: wake the tracking waiters.
        try:
            self._topic.watch().wake()
        except (StoreClosed, OSError):
            pass
        return int(result[0])

    def max_id(self, application: str) -> int | None:
        """The highest recorded notification id of ``application``, or None."""
        st = self._state
        with st.lock:
            st.sync()
            return st.maxes.get(application)

    def watch(self) -> Watch:
        """Wake-ups on every tracking record, alone or with events."""
        w: Watch = self._topic.watch()
        return w
