"""The point-to-point queue view: a topic consumed by one shared group.

``log.queue("emails")`` is topic ``emails`` plus the shared group
``emails.queue`` on it, whose dead-letter topic is ``emails.dlq``
(docs/views.md). Every message goes to one consumer of the group at a time,
in any thread or process; an unacknowledged message comes back after
``ack_wait_s``, and after ``max_deliver`` deliveries it moves to the
dead-letter topic.

Delayed delivery (``put(delay_s=)``) is the topic's delayed append
(``Topic.append_delayed``): no consumer of the group gets the message before
it is due, and waiting for it uses no delivery, so a delay never uses up
``max_deliver``. On the embedded engine the due time travels in the record,
as header ``streamlog.deliver-at-ms`` (epoch milliseconds).
"""

from __future__ import annotations

import math
import time
from typing import Any

from streamlog import _tracing, _validate, api
from streamlog._types import Position, now_ms
from streamlog.views import _serde, check_view_topic, derive_names, ensure_view_group
from streamlog.views._consumers import ThreadConsumers

DELIVER_AT_MS = _validate.DELIVER_AT_MS


def due_ms(message: api.Message) -> int | None:
    """The time a delayed message is due (epoch ms), or None when it carries no delay."""
    return _validate.deliver_at(message.headers)


class Queue:
    """A point-to-point queue (``log.queue(name)``): put, get, ack/nack, dead letters.

    Thread-safe: each thread that calls ``get`` is a consumer of the queue's
    group of its own (settle a message in the thread that got it).
    Process-safe: every process that opens the queue shares its messages.
    """

    def __init__(self, log: api.Store, name: str, ack_wait_s: float = 30,
                 max_deliver: int = 5, serializer: Any = None,
                 schema_version: int | str | None = None) -> None:
        _validate.name(name, "queue name")
        stamp = _serde.check(serializer, schema_version)
        names = derive_names(name, group=".queue", dead_letter=".dlq")
        self._log = log
        self.name = name
        self.group_name: str = names["group"]
        self.dead_letter_topic: str = names["dead_letter"]
        raw = log.topic(name)
        check_view_topic(raw, "queue", name)
        self._topic: api.Topic = raw if stamp is None else _serde.SerializedTopic(raw, stamp)
        self._consumers = ThreadConsumers(self._topic, self.group_name, one_at_a_time=True,
                                          mode="shared",
                                          ack_wait_s=ack_wait_s, max_deliver=max_deliver,
                                          dead_letter=self.dead_letter_topic)
        # The group exists from now on (a group of that name in another mode is
        # refused here); consumers are opened only by the threads that consume.
        ensure_view_group(self._topic, self.group_name, "queue", name, mode="shared",
                          ack_wait_s=ack_wait_s, max_deliver=max_deliver,
                          dead_letter=self.dead_letter_topic)

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    @property
    def topic(self) -> api.Topic:
        """The queue's topic (its name is the queue's name), with the queue's serializer."""
        return self._topic

    def put(self, value: Any, key: Any = None, headers: Any = None,
            delay_s: float = 0, subject: str | None = None) -> Position:
        """Append a message; with ``delay_s`` > 0 no consumer gets it before that many seconds.

        Returns its Position. Raises TypeError/ValueError/RecordTooLarge before
        writing anything. ``subject`` is stored as the record's subject.
        """
        self._log.raise_if_closed()
        delay = _validate.seconds(delay_s, "delay_s") or 0.0
        if subject is not None:
            headers = _validate.with_subject(headers, subject)
        if delay > 0:
            return self._topic.append_delayed(value, now_ms() + math.ceil(delay * 1000),
                                              key=key, headers=headers)
        return self._topic.append(value, key=key, headers=headers)

    def get(self, timeout: float | None = 1.0) -> api.Message | None:
        """The next message (a group Message: ``ack()``, ``nack(delay_s=)``), or None.

        Blocks up to ``timeout`` seconds (None: until a message comes). With a
        serializer, ``value`` is decoded; a message that does not decode is not
        returned: it is nacked with the DecodeError (one delivery toward
        ``max_deliver``, then the dead-letter topic) and the wait goes on.
        """
        self._log.raise_if_closed()
        if timeout is not None and not (timeout.__class__ is float and 0 <= timeout < math.inf):
            timeout = _validate.seconds(timeout, "timeout", allow_inf=True)
        t0 = time.monotonic()
        g = self._consumers.mine()
        tracer = _tracing.tracer()
        if tracer is None:
            # The usual call: one poll (a consumer that holds a leased record hands it
            # out without a transaction); again only if a record failed to decode.
            for m in g.poll(max_records=1, timeout=timeout):
                return m
        deadline = None if timeout is None else t0 + timeout
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if tracer is None:
                if wait == 0.0:
                    return None
                for m in g.poll(max_records=1, timeout=wait):
                    return m
                continue
            got: list[api.Message] = _tracing.view_poll(g, 1, wait)
            for m in got:
                # A receive span: the message leaves the view with the caller.
                _tracing.Processing(tracer, m.topic, "get", m.headers, m.partition,
                                    m.offset, {"messaging.operation.type": "receive"}).end()
                return m
            if wait == 0.0:
                return None

    def dead_letters(self) -> api.Topic:
        """The dead-letter topic (``<name>.dlq``): messages that used up ``max_deliver``."""
        self._log.raise_if_closed()
        return self._consumers.mine().dead_letters()

    def lag(self) -> int:
        """Messages not yet acknowledged (delayed ones included)."""
        self._log.raise_if_closed()
        return self._consumers.mine().lag()

    def close(self) -> None:
        """Close this handle's consumers: their unacked messages go to other consumers now.

        Call it when no thread is consuming through this handle any more; the
        store's close does it too.
        """
        self._consumers.close()
