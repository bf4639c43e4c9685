"""The pub-sub view: one topic, each durable subscription a shared group named after it.

``log.pubsub("prices")`` is topic ``prices``; ``subscribe("analytics")`` is
the shared group ``analytics`` on it, whose dead-letter topic is the group
default ``prices.analytics.dlq`` (docs/views.md). Every subscription sees
every message; the consumers of one subscription (threads, processes)
share its messages. A subscription keeps its position in the store, so
subscribing again by name resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from streamlog import _tracing, _validate, api
from streamlog._limits import DERIVED_NAME_MAX_CHARS
from streamlog._types import Position
from streamlog.views import _serde, check_view_topic, derive_names, ensure_view_group
from streamlog.views._consumers import ThreadConsumers

_STARTS = ("earliest", "latest")


class PubSub:
    """A fan-out view (``log.pubsub(name)``): ``publish`` messages, ``subscribe`` by name.

    Thread-safe and process-safe.
    """

    def __init__(self, log: api.Store, name: str, serializer: Any = None,
                 schema_version: int | str | None = None) -> None:
        _validate.name(name, "pubsub name")
        stamp = _serde.check(serializer, schema_version)
        self._log = log
        self.name = name
        raw = log.topic(name)
        check_view_topic(raw, "pubsub", name)
        self._topic: api.Topic = raw if stamp is None else _serde.SerializedTopic(raw, stamp)

    def __repr__(self) -> str:
        return f"PubSub({self.name!r})"

    @property
    def topic(self) -> api.Topic:
        """The view's topic (its name is the view's name)."""
        return self._topic

    def publish(self, value: Any, key: Any = None, headers: Any = None,
                subject: str | None = None) -> Position:
        """Append a message for every subscription; returns its Position.

        ``subject`` is stored as the record's subject: subscriptions made with
        ``subjects=`` get only the messages whose subject matches."""
        self._log.raise_if_closed()
        if subject is not None:
            return self._topic.append(value, key=key, headers=headers, subject=subject)
        return self._topic.append(value, key=key, headers=headers)

    def subscribe(self, name: str, start: str = "earliest", ack_wait_s: float = 30,
                  max_deliver: int = 5, subjects: Sequence[str] | None = None) -> Subscription:
        """The durable subscription ``name``: created on first use, resumed after.

        ``start`` applies when the subscription is created: "earliest" (every
        retained message) or "latest" (only messages published from now on);
        an existing subscription resumes where it stopped whatever ``start`` says.
        ``subjects`` (NATS wildcards ``*`` and ``>``) keeps only messages whose
        subject matches; the others count as done for the subscription.
        """
        self._log.raise_if_closed()
        return Subscription(self, name, start, ack_wait_s, max_deliver, subjects)

    def subscriptions(self) -> list[str]:
        """Names of the topic's groups: the subscriptions (and any other group on the topic)."""
        return self._topic.groups()

    def unsubscribe(self, name: str) -> None:
        """Delete subscription ``name`` and its position (its dead-letter topic stays)."""
        self._log.raise_if_closed()
        _validate.name(name, "subscription name")
        self._topic.delete_group(name)


class Subscription:
    """A durable, named subscription: a shared group on the pub-sub topic.

    Thread-safe: each thread that listens is a consumer of the subscription of
    its own (settle a message in the thread that got it).
    """

    def __init__(self, pubsub: PubSub, name: str, start: str, ack_wait_s: float,
                 max_deliver: int, subjects: Sequence[str] | None = None) -> None:
        _validate.name(name, "subscription name")
        if not isinstance(start, str):
            raise TypeError(f"start must be a str, not {type(start).__name__}")
        if start not in _STARTS:
            raise ValueError(f"start must be 'earliest' or 'latest', not {start!r}")
        dead_letter = derive_names(f"{pubsub.name}.{name}", DERIVED_NAME_MAX_CHARS,
                                   dead_letter=".dlq")["dead_letter"]
        self.pubsub = pubsub
        self.name = name
        self.dead_letter_topic = dead_letter
        filters: dict[str, Any] = {}
        if subjects is not None:
            filters["subjects"] = _validate.subjects(subjects)
        self._consumers = ThreadConsumers(pubsub._topic, name, mode="shared",
                                          ack_wait_s=ack_wait_s, max_deliver=max_deliver,
                                          start=start, dead_letter=dead_letter, **filters)
        # Create the group now: "latest" means the end of the topic at subscribe().
        ensure_view_group(pubsub._topic, name, "subscription", name, mode="shared",
                          ack_wait_s=ack_wait_s, max_deliver=max_deliver, start=start,
                          dead_letter=dead_letter, **filters)

    def __repr__(self) -> str:
        return f"Subscription({self.pubsub.name!r}, {self.name!r})"

    def listen(self, timeout: float | None = 1.0,
               auto_ack: bool = True) -> Iterator[api.Message]:
        """Iterate over messages; ends after ``timeout`` seconds with none (None: never).

        With ``auto_ack`` a message is acknowledged when the loop asks for the
        next one; one the loop broke off at stays unacknowledged and comes
        back after ``ack_wait_s`` (or at once after ``close()``). With
        ``auto_ack=False`` call ``m.ack()`` yourself.
        """
        self.pubsub._log.raise_if_closed()
        if timeout is not None:
            timeout = _validate.seconds(timeout, "timeout", allow_inf=True)
        if not isinstance(auto_ack, bool):
            raise TypeError(f"auto_ack must be a bool, not {type(auto_ack).__name__}")
        return self._listen(timeout, auto_ack)

    def _listen(self, timeout: float | None, auto_ack: bool) -> Iterator[api.Message]:
        g = self._consumers.mine()  # the consumer of the thread that iterates
        deadline = None if timeout is None else time.monotonic() + timeout
        tracer = _tracing.tracer()
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if tracer is None:
                msgs = g.poll(max_records=1, timeout=wait)
            else:
                msgs = _tracing.view_poll(g, 1, wait)
            if msgs:
                m = msgs[0]
                if tracer is None:
                    yield m
                else:
                    # A process span from the message's delivery until the loop asks
                    # for the next one (or breaks off), current meanwhile.
                    span = _tracing.Processing(tracer, m.topic, "listen", m.headers,
                                               m.partition, m.offset)
                    try:
                        yield m
                    finally:
                        span.end()
                if auto_ack:
                    m.ack()  # the loop asked for the next one: this one is done
                if timeout is not None:
                    deadline = time.monotonic() + timeout
            elif deadline is not None and time.monotonic() >= deadline:
                return

    def lag(self) -> int:
        """Messages this subscription has not acknowledged yet."""
        self.pubsub._log.raise_if_closed()
        return self._consumers.mine().lag()

    def dead_letters(self) -> api.Topic:
        """The subscription's dead-letter topic (``<pubsub>.<subscription>.dlq``)."""
        self.pubsub._log.raise_if_closed()
        return self._consumers.mine().dead_letters()

    def close(self) -> None:
        """Close this handle's consumers: unacked messages go to other consumers now.

        The subscription itself stays (``unsubscribe`` deletes it).
        """
        self._consumers.close()
