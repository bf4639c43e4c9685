"""Every size, count and time limit of streamlog, named with its unit."""

# Topic defaults (documented in docs/concepts.md and the API). 64 MiB segments bound
# how much one retention step removes and how much a cold recovery rescans.
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
# 8 MiB per record keeps one record well inside a segment and a reader's memory.
DEFAULT_MAX_RECORD_BYTES = 8 * 1024 * 1024
# JetStream's duplicate window default is 2 minutes.
DEFAULT_DEDUPE_WINDOW_S = 120
DEFAULT_PARTITIONS = 1

# Smallest segment a topic may ask for: one batch header plus a small record,
# so a roll always makes progress.
MIN_SEGMENT_BYTES = 1024
# A segment file's capacity must fit the u32 file positions in .index entries.
MAX_SEGMENT_BYTES = 1 << 31
# Record batch lengths are u32 and record fields i32: stay well below both.
MAX_MAX_RECORD_BYTES = 1 << 30
# Kafka's limit on partitions per topic is far higher; a local store with one
# control file and mapping per partition is past its useful size well before.
MAX_PARTITIONS = 4096

# Kafka's index.interval.bytes: one sparse index entry per ~4 KiB of log
# bounds a lookup's forward scan to about one page.
INDEX_INTERVAL_BYTES = 4096

# "interval" durability: background fsync at least this often (docs/guarantees.md).
SYNC_INTERVAL_S = 0.2
# Retention is applied on open and then at least this often by a background
# thread of every Log open for writing, so a topic that stopped receiving
# records still loses its expired segments (Kafka's
# log.retention.check.interval.ms is 5 minutes too). Each check looks only at
# topics with a retention policy: a stat and a header read per partition.
RETENTION_CHECK_INTERVAL_S = 300.0

# Names: [A-Za-z0-9][A-Za-z0-9._-]{0,199}; 249 is Kafka's topic name limit,
# used for names that views derive (dead-letter topics).
NAME_MAX_CHARS = 200
DERIVED_NAME_MAX_CHARS = 249

# LMDB keys are at most 511 bytes; longer ids are hashed (BLAKE2b) to this size.
LMDB_MAX_KEY_BYTES = 511
HASHED_ID_BYTES = 32

# LMDB map size: start small (sparse file) and double when full.
LMDB_INITIAL_MAP_BYTES = 64 * 1024 * 1024
LMDB_MAX_READERS = 1024

# Header names are u16-length prefixed in the batch format.
MAX_HEADER_NAME_BYTES = 0xFFFF
MAX_HEADERS_PER_RECORD = 0xFFFF

# Records of one batch share a first timestamp; deltas are i32 milliseconds.
MAX_TIMESTAMP_DELTA_MS = (1 << 31) - 1
MAX_TIMESTAMP_MS = (1 << 63) - 1

# rpc correlation index: an entry whose request deadline passed this long ago
# is pruned (its requester has stopped waiting; the slack covers clock steps
# between processes' reads of the wall clock).
RPC_INDEX_GRACE_S = 10.0
# How often a server prunes the correlation index: each prune is one LMDB
# write transaction over the entries of requests still in flight.
RPC_INDEX_PRUNE_INTERVAL_S = 5.0
# An rpc server worker's longest single wait in a poll before it looks at its
# stop flag again: what Server.stop() (and so Log.close()) may have to wait.
# Short, as an idle poll costs one small LMDB transaction.
RPC_SERVER_POLL_S = 0.1
# The longest single wait of a view's loop that has no deadline of its own
# before it looks at its stop flag again.
VIEW_POLL_S = 0.5

# Event store (views/event_store.py). A stream id travels in every event's
# headers and keys the stream's index entries; 4 KiB is far above any useful
# id (a UUID is 36 bytes) and keeps one event's framing small.
EVENT_STREAM_ID_MAX_BYTES = 4096
# Stream ids up to this many bytes appear verbatim in index keys, longer ones
# as a 32-byte BLAKE2b hash: a key (store name <= 200 bytes + framing) stays
# under LMDB's 511-byte limit.
EVENT_STREAM_ID_INLINE_BYTES = 300
# One index entry holds the positions of this many consecutive versions of a
# stream (8 bytes each, 2 KiB): reading a 1,000-event stream is four lookups.
EVENT_INDEX_CHUNK_VERSIONS = 256
# The stream index in LMDB may trail the log by this many records: each
# process keeps the rest in memory (rebuilt from the log) and any process
# writes it back once it holds this many, so appends rarely commit to LMDB.
EVENT_INDEX_FLUSH_RECORDS = 1024
# Each process remembers the last version of up to this many streams it has
# seen appended (about 100 bytes each), so an expected-version check rarely
# reads LMDB; past it the memory is cleared and LMDB answers.
EVENT_INDEX_CACHED_STREAMS = 65536
# Reading a stream: positions at most this far apart are read in one pass
# over the log: decoding an unrelated record costs about 1/60 of starting a
# new read (index lookup, segment mapping, generator), measured.
EVENT_READ_GAP_RECORDS = 64
# subscribe(): records fetched per catch-up read (bounds a subscriber's memory).
EVENT_SUBSCRIBE_BATCH_RECORDS = 512

# Consumer groups. Records handed out and not yet acked, per group and
# partition: bounds the per-partition state every poll rewrites (as
# JetStream's max_ack_pending bounds a consumer's).
GROUP_MAX_PENDING_RECORDS = 20_000
# Records one poll moves to the dead-letter topic at most (one append each):
# keeps a poll short when many leases expired with no deliveries left.
GROUP_DEAD_LETTER_BATCH = 1000
# Records one poll of a group with a subject filter looks at, at most (over all
# partitions): the extension matches subjects in place at about 15-40 ns a record,
# so this bounds the poll's write transaction to a few milliseconds.
GROUP_FILTER_SCAN_RECORDS = 200_000
# A consumer records that it is alive at least this often (and at least four
# times per ack_wait_s): exclusive groups judge owners by it.
GROUP_HEARTBEAT_MAX_S = 1.0
# A one-at-a-time consumer's ack leases it the next record in the same
# transaction; its next get hands that record out only if it was leased at most
# this long ago (and at most a tenth of ack_wait_s), so the lease the user gets
# is nearly whole. Otherwise it goes back without counting a delivery.
GROUP_HOLD_MAX_MS = 1000
# A one-at-a-time consumer (the queue view) that comes back for more quickly
# leases several records per transaction (prefetch) and hands them out one per
# get: at most this many, and only as many as its recent pace would take
# within GROUP_PREFETCH_WINDOW_MS, so a slow consumer keeps leasing one at a time.
GROUP_PREFETCH_MAX = 256
GROUP_PREFETCH_WINDOW_MS = 10
# Prefetched records not handed out this long after their lease (the consumer
# slowed down) go back to the group, their delivery not counted, for others.
GROUP_PREFETCH_HOLD_MS = 50
# Such a consumer's ack is committed with its next poll's transaction, by its
# close(), or by the store's background committer once it is this old: acks
# are batched, and one that a crash catches uncommitted is a redelivery.
GROUP_ACK_DELAY_MS = 20
# Member entries of consumers silent this long (or 10 x ack_wait_s if longer)
# are dropped when the group is opened: processes that died without close().
GROUP_MEMBER_FORGET_S = 3600.0

# msg_id dedupe. Ids above this many bytes are indexed by their BLAKE2b hash
# (the index key must stay under LMDB's 511-byte limit with the topic name).
DEDUPE_ID_MAX_BYTES = 256
# Expired ids pruned per dedupe append at most: pruning is lazy and bounded.
DEDUPE_PRUNE_BATCH = 16
# A catch-up of the dedupe index reading more records than this (appends made
# without msg_id since the last dedupe append) starts at the window's first
# record by timestamp instead of at the index's high-water mark.
DEDUPE_CATCHUP_SCAN_RECORDS = 10_000

# Blocks of the active segment are reserved (posix_fallocate) this far ahead of
# the data: a store into a mapped hole on a full disk would be a SIGBUS, and
# reserving a whole 64 MiB segment per partition up front wastes disk.
SEGMENT_ALLOCATION_CHUNK_BYTES = 4 * 1024 * 1024

# Written bytes of the active segment are handed to the kernel's writeback
# (sync_file_range, no wait) in steps of at least this size, when a chunk is
# reserved: a roll's fdatasync then waits for about the last step, not for a
# whole 64 MiB segment (RocksDB's bytes_per_sync is 1 MiB for the same reason).
WRITEBACK_STEP_BYTES = 1024 * 1024

# The recovery point (how far a partition is known synced) reaches the disk with
# its control block at most this often per process: an fsync of the control
# file per data sync would double the cost of durability="always". A recovery
# point that lags only makes recovery after a crash re-validate more.
RECOVERY_POINT_SYNC_S = 1.0

# Log.stats()'s append_rate_per_s: records whose timestamp falls in the last minute,
# per second (Kafka's MessagesInPerSec reports 1-minute rates too).
RATE_WINDOW_S = 60.0

# Compaction (storage/compaction.py). Kafka's delete.retention.ms default: a
# tombstone stays a day after it was written, so a consumer that reads the
# topic at least daily sees every deletion.
DEFAULT_DELETE_RETENTION_S = 86_400.0
# The key map of one compaction holds at most this many keys (a 16-byte BLAKE2b
# hash and an offset each, about 130 bytes in a Python dict: ~130 MB at the
# limit, Kafka's cleaner dedupe buffer is 128 MB). Past it, a compaction covers
# the segments whose keys fit (at least one whole segment) and the next one goes
# on from there: memory stays bounded whatever the topic's size.
COMPACTION_MAX_KEYS = 1_000_000
# Background compaction: a process that has a compacted topic open for writing
# looks at its partitions this often (and after every roll it makes); a
# partition is compacted when at least COMPACTION_MIN_SUPERSEDED of its closed
# bytes would go (Kafka's min.cleanable.dirty.ratio, 0.5).
COMPACTION_CHECK_INTERVAL_S = 30.0
COMPACTION_MIN_SUPERSEDED = 0.5

# Copying a store (streamlog.copy). Records per destination batch: JetStream's
# atomic batch limit (limits.batch.max_msgs, 1,000 by default), used on both
# backends so that a copy lands in the same units everywhere; and at most this
# many bytes per batch on the embedded store (well under a 64 MiB segment).
COPY_BATCH_RECORDS = 1000
COPY_BATCH_BYTES = 4 * 1024 * 1024
# Batches of one partition in flight at once on JetStream: the client, not the
# server, bounds throughput, so the next batch goes out while earlier ones wait
# for their acknowledgement (the server allows 50 open batches per stream).
COPY_BATCHES_IN_FLIGHT = 8
# How long a copy keeps sending a batch that no stream leader answers (an R3 stream's
# election after a node loss measured 4-9 s here).
COPY_NO_LEADER_WAIT_S = 15.0
# Records read from the source per step of a copy (one append_copies call).
COPY_READ_RECORDS = 8000

# Segments per partition whose subject index (for groups with a subject filter) is kept in
# memory, the most recently used ones: about 2 bytes a record plus 24 a batch each, so at
# most ~11 MiB a segment of one-record batches.
SUBJECT_INDEX_SEGMENTS = 4
