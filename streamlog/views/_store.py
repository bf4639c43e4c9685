"""The store methods that open a view, shared by every backend's store class."""

from __future__ import annotations

from typing import Any

from streamlog.views.event_store import EventStore
from streamlog.views.pubsub import PubSub
from streamlog.views.queue import Queue
from streamlog.views.rpc import Rpc


class ViewMethods:
    """The store methods that open a view (``log.queue(...)`` and the rest), the same on
    every backend: a backend's store class inherits them and provides ``_check``."""

    def _check(self) -> None:
        raise NotImplementedError  # the backend's store class has its own

    def queue(self, name: str, ack_wait_s: float = 30, max_deliver: int = 5,
              serializer: Any = None, schema_version: int | str | None = None) -> Queue:
        """A point-to-point queue view (see streamlog.views.queue)."""
        self._check()
        return Queue(self, name, ack_wait_s=ack_wait_s,  # type: ignore[arg-type]
                     max_deliver=max_deliver, serializer=serializer,
                     schema_version=schema_version)

    def pubsub(self, name: str, serializer: Any = None,
               schema_version: int | str | None = None) -> PubSub:
        """A fan-out view (see streamlog.views.pubsub)."""
        self._check()
        return PubSub(self, name, serializer=serializer,  # type: ignore[arg-type]
                      schema_version=schema_version)

    def rpc(self, name: str, serializer: Any = None,
            schema_version: int | str | None = None) -> Rpc:
        """A request-reply view (see streamlog.views.rpc)."""
        self._check()
        return Rpc(self, name, serializer=serializer,  # type: ignore[arg-type]
                   schema_version=schema_version)

    def event_store(self, name: str, serializer: Any = None,
                    schema_version: int | str | None = None) -> EventStore:
        """An event-sourcing view (see streamlog.views.event_store)."""
        self._check()
        return EventStore(self, name, serializer=serializer,  # type: ignore[arg-type]
                          schema_version=schema_version)
