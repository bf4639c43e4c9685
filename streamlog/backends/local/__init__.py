"""The embedded engine: topics of segment files, consumer groups and indexes in LMDB.

``open_log(path)`` opens a store directory (``streamlog.open`` on a path).
Its parts: ``log`` (Log and Topic), ``groups`` and their pure state model
``groupstate``, ``dedupe``, ``eventlog`` (the event store's conditional
append and stream index), ``replybox`` (rpc replies by correlation id),
``storage`` (segments, partitions, the LMDB environment) and ``codec`` (the
record-batch format, with the compiled ``streamlog._ext`` beside it).
"""
