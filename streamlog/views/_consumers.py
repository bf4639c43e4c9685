"""One group consumer per thread, so that a view handle can be shared by threads.

A group handle is one consumer and is not thread-safe, and neither are the
messages it delivers; a view handle (a queue, a subscription) may be shared
by threads. So each thread that consumes through a view handle gets a group
handle of its own, opened on first use: threads calling ``get``/``listen``
at once are separate consumers of the same group, and a message is settled
through the handle of the thread that received it.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from streamlog import api
from streamlog.errors import StoreClosed, TopicNotFound


class ThreadConsumers:
    """The group handles of one view handle, one per consuming thread. Thread-safe."""

    def __init__(self, topic: api.Topic, group: str, one_at_a_time: bool = False,
                 **options: Any) -> None:
        self._topic = topic
        self._one_at_a_time = one_at_a_time  # see api.Group.one_at_a_time
        self._group = group
        self._options = options
        self._local = threading.local()
        self._lock = threading.Lock()
        # Weak: the consumer of a thread that ended goes with the thread (its
        # unacked messages come back after ack_wait_s, as after a crash).
        self._all: weakref.WeakSet[api.Group] = weakref.WeakSet()
        self._closed = False

    def _open(self) -> api.Group:
        g = self._topic.group(self._group, **self._options)
        if self._one_at_a_time:
            g.one_at_a_time()
        with self._lock:
            if self._closed:
                closed = True
            else:
                closed = False
                self._all.add(g)
        if closed:
            _close_quietly(g)
            raise StoreClosed("this view handle was closed")
        return g

    def mine(self) -> api.Group:
        """This thread's consumer (opened on first use; ConfigMismatch etc. as Topic.group)."""
        g: api.Group | None = getattr(self._local, "group", None)
        if g is None:
            if self._closed:
                raise StoreClosed("this view handle was closed")
            g = self._open()
            self._local.group = g
        return g

    def close(self) -> None:
        """Close every thread's consumer: their leases go back to the group at once.

        Call it when no thread is consuming through this view handle any more.
        """
        with self._lock:
            self._closed = True
            groups = list(self._all)
            self._all.clear()
        for g in groups:
            _close_quietly(g)


def _close_quietly(g: api.Group) -> None:
    try:
        g.close()
    except (StoreClosed, TopicNotFound):
        pass
