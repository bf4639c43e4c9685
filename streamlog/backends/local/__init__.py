"""The embedded engine: topics of segment files, consumer groups and indexes in LMDB.

``open_log(path)`` opens a store directory (``streamlog.open`` on a path).
Its parts: ``log`` (Log and Topic), ``groups`` and their pure state model
``groupstate``, ``dedupe``, ``eventlog`` (the event store's conditional
append and stream index), ``replybox`` (rpc replies by correlation id),
``storage`` (segments, partitions, the LMDB environment) and ``codec`` (the
record-batch format, with the compiled ``streamlog._ext`` beside it).
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mypy checks, in CI, that the engine's classes satisfy the contract
    from streamlog import api
    from streamlog.backends.local.eventlog import LocalEventLog
    from streamlog.backends.local.groups import Group, Message
    from streamlog.backends.local.log import Log, Topic, _TopicWatch
    from streamlog.backends.local.replybox import LocalReplyBox
    from streamlog.backends.local.tracking import LocalTrackingLog

    def _satisfies_the_contract(log: Log, topic: Topic, group: Group, message: Message,
                                watch: _TopicWatch, events: LocalEventLog,
                                tracking: LocalTrackingLog, replies: LocalReplyBox) -> None:
        store: api.Store = log
        t: api.Topic = topic
        g: api.Group = group
        m: api.Message = message
        w: api.Watch = watch
        e: api.EventLog = events
        tr: api.TrackingLog = tracking
        r: api.ReplyBox = replies
        del store, t, g, m, w, e, tr, r
