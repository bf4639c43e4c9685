"""streamlog: an embedded, durable, log-structured streaming store.

One directory holds topics; a topic is a set of partitions; a partition is an
append-only log of CRC32C-checked record batches. Queues, pub-sub,
request-reply and event streams are views over the log. The same API runs
on NATS JetStream: ``streamlog.open("nats://host:4222/store")``. docs/ states
the contract: every guarantee, and the tests that prove it.
"""

import logging as _logging

from streamlog._types import (
    CompactionResult,
    Position,
    Problem,
    Record,
    RecordBatch,
    Retention,
    TableChange,
)
from streamlog.api import ANY, NO_STREAM, Event
from streamlog.backends import open_store as open  # noqa: A004 - the public name
from streamlog.backends.local.groups import Group, GroupReset, Lease, Message
from streamlog.backends.local.log import Log, Topic
from streamlog.errors import (
    ConfigMismatch,
    CorruptionError,
    GroupActive,
    OffsetOutOfRange,
    ReadOnlyStore,
    RecordTooLarge,
    RemoteError,
    RequestTimeout,
    StoreClosed,
    StreamlogError,
    TopicNotFound,
    WrongExpectedVersion,
)

__version__ = "0.1.0"

# A library stays silent unless the application configures logging: recovery
# truncations and retention deletions go to the "streamlog" logger.
_logging.getLogger("streamlog").addHandler(_logging.NullHandler())
# Registers the append-rate figure of Log.stats() (streamlog.metrics).
from streamlog import metrics as _metrics  # noqa: E402,F401

# ``streamlog.copy`` is the function (streamlog.copying holds it and its result types).
from streamlog.copying import CopyProgress, CopyResult, copy  # noqa: E402

__all__ = [
    "open",
    "copy",
    "CopyProgress",
    "CopyResult",
    "Log",
    "Topic",
    "Position",
    "Problem",
    "Record",
    "RecordBatch",
    "Retention",
    "CompactionResult",
    "TableChange",
    "Group",
    "Message",
    "Lease",
    "GroupReset",
    "Event",
    "ANY",
    "NO_STREAM",
    "StreamlogError",
    "TopicNotFound",
    "ConfigMismatch",
    "RecordTooLarge",
    "OffsetOutOfRange",
    "CorruptionError",
    "WrongExpectedVersion",
    "RequestTimeout",
    "RemoteError",
    "StoreClosed",
    "ReadOnlyStore",
    "GroupActive",
]
