# Native half: mappings, Record, the partition control block and its writer.

cimport cython
from posix.mman cimport mmap, munmap, madvise, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS

cdef extern from *:
    """
    #ifndef MADV_POPULATE_READ
    #define MADV_POPULATE_READ 22  /* Linux 5.14; older kernels answer EINVAL */
    #endif
    #define SL_MADV_POPULATE_READ MADV_POPULATE_READ
    """
    int SL_MADV_POPULATE_READ
from libc.errno cimport errno, EBUSY
from libc.stdint cimport uintptr_t
from libc.stdlib cimport malloc, free
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME, CLOCK_MONOTONIC

cdef extern from "<errno.h>":
    int EOWNERDEAD
    int ENOTRECOVERABLE
from cpython.buffer cimport PyBUF_WRITABLE, PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES
from libc.string cimport strerror
import os as _os

cdef extern from "<sys/mman.h>":
    void *MAP_FAILED
    int MAP_PRIVATE
    int MAP_ANONYMOUS
    int MAP_FIXED
    int MAP_NORESERVE

cdef extern from "native.h":
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef union sl_lock:
        pthread_mutex_t mutex
    ctypedef struct sl_control:
        char magic[8]
        uint32_t version
        uint32_t flags
        char boot_id[16]
        sl_lock lock
        uint64_t seq
        uint64_t generation
        uint64_t active_base
        uint64_t end_offset
        uint64_t end_pos
        uint64_t pending_end
        uint64_t capacity
        int64_t max_timestamp_ms
        uint64_t start_offset
        uint64_t recovery_point
        uint64_t index_count
        uint64_t last_index_pos
        uint64_t synced_offset
        uint32_t notify_seq
        uint32_t waiters
        uint64_t allocated_end
    ctypedef struct sl_view:
        uint64_t generation, active_base, end_offset, end_pos, capacity, start_offset
        int64_t max_timestamp_ms
    int SL_CONTROL_BYTES
    uint32_t SL_FLAG_DELETED
    void sl_read_view(sl_control *c, sl_view *v) nogil
    void sl_publish_begin(sl_control *c) nogil
    void sl_publish_end(sl_control *c) nogil
    void sl_notify(uint32_t *word, uint32_t *waiters) nogil
    int sl_wait(uint32_t *word, uint32_t *waiters, uint32_t expected, double timeout_s) nogil
    int sl_wait_ro(uint32_t *word, uint32_t expected, double timeout_s) nogil
    int sl_waitv(const uint64_t *addrs, const uint32_t *vals, const unsigned char *counted,
                 unsigned n, double timeout_s) nogil
    enum: SL_WAITV_MAX
    int sl_mutex_init(sl_control *c) nogil
    uint64_t sl_load64(const uint64_t *p) nogil
    uint32_t sl_load32(const uint32_t *p) nogil
    int pthread_mutex_trylock(pthread_mutex_t *m) nogil
    int pthread_mutex_lock(pthread_mutex_t *m) nogil
    int pthread_mutex_unlock(pthread_mutex_t *m) nogil
    int pthread_mutex_consistent(pthread_mutex_t *m) nogil

cdef extern from *:
    """
    static inline void sl_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    static inline void sl_atomic_store_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void sl_atomic_or_u32(uint32_t *p, uint32_t v) { __atomic_or_fetch(p, v, __ATOMIC_ACQ_REL); }
    static inline void sl_atomic_store_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline int sl_cas_u32(uint32_t *p, uint32_t expected, uint32_t v) {
        return __atomic_compare_exchange_n(p, &expected, v, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    }
    static inline void sl_atomic_max_u64(uint64_t *p, uint64_t v) {
        uint64_t cur = __atomic_load_n(p, __ATOMIC_ACQUIRE);
        while (cur < v && !__atomic_compare_exchange_n(p, &cur, v, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {}
    }
    """
    void sl_fence() nogil
    void sl_atomic_store_u64(uint64_t *p, uint64_t v) nogil
    void sl_atomic_or_u32(uint32_t *p, uint32_t v) nogil
    void sl_atomic_store_u32(uint32_t *p, uint32_t v) nogil
    int sl_cas_u32(uint32_t *p, uint32_t expected, uint32_t v) nogil
    void sl_atomic_max_u64(uint64_t *p, uint64_t v) nogil



CONTROL_BYTES = SL_CONTROL_BYTES
CONTROL_MAGIC = b"SLCTRL01"
CONTROL_VERSION = 1
INDEX_ENTRY_BYTES = 8
TIMEINDEX_ENTRY_BYTES = 12
# Kafka's index.interval.bytes (mirrors _limits.INDEX_INTERVAL_BYTES; a test checks).
DEF INDEX_INTERVAL = 4096
INDEX_INTERVAL_BYTES = INDEX_INTERVAL

cdef char _empty_byte = 0
cdef char *_format_B = "B"


cdef class Mapping:
    """A shared memory map of a file region; exports the buffer protocol.

    The mapping lives as long as any view of it does, so a numpy array or a
    memoryview handed to a caller stays valid after the file is deleted.
    Thread-safe to read; writers synchronise through the partition lock.
    ``release()`` lets go of the file before the object dies (store close).
    """
    cdef char *addr
    cdef readonly Py_ssize_t length
    cdef readonly bint writable
    cdef readonly bint released
    cdef Py_ssize_t _exports
    cdef Py_ssize_t _shape[1]
    cdef Py_ssize_t _strides[1]

    def __cinit__(self, int fd, Py_ssize_t length, bint writable=False, bint private=False):
        # private: a copy-on-write mapping (MAP_PRIVATE; anonymous when fd < 0)
        # whose stores never reach the file: a read-only store rebuilds a stale
        # control block there.
        cdef void *a
        cdef int prot = PROT_READ | (PROT_WRITE if writable else 0)
        cdef int flags = MAP_SHARED
        if private:
            flags = MAP_PRIVATE | (MAP_ANONYMOUS if fd < 0 else 0)
        self.writable = writable
        self.length = length if length > 0 else 0
        self.addr = NULL
        if length > 0:
            a = mmap(NULL, length, prot, flags, fd, 0)
            if a == MAP_FAILED:
                raise OSError(errno, strerror(errno).decode())
            self.addr = <char *>a
        self._shape[0] = self.length
        self._strides[0] = 1

    def __dealloc__(self):
        if self.addr != NULL:
            munmap(self.addr, self.length)
            self.addr = NULL

    def __len__(self):
        return self.length

    property exports:
        def __get__(self): return self._exports

    def release(self):
        """Let go of the file now: the region is replaced by private zero pages.

        The address stays valid (a Control, Writer or Notifier that still points
        into it reads zeros instead of faulting), but the file is no longer
        mapped, so nothing of it stays held by this process. Refused (returns
        False, the file stays mapped until the last view dies) while a view
        of the mapping exists: its contents must not change under it. True
        when the file is no longer mapped; idempotent.
        """
        cdef void *a
        if self.released or self.addr == NULL:
            self.released = True
            return True
        if self._exports > 0:
            return False
        a = mmap(self.addr, self.length, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0)
        if a == MAP_FAILED:
            raise OSError(errno, strerror(errno).decode())
        self.released = True
        return True

    def prefault(self, Py_ssize_t start, Py_ssize_t end):
        """Fault pages [start, end) of the mapping in without touching their
        contents (``MADV_POPULATE_READ``, GIL released): the kernel allocates and
        zeroes the page-cache pages of a fresh part of a segment now, so an
        append that stores into them later takes only a cheap write-enable
        fault. Read-populating dirties nothing (no zeros are written back).
        Returns 0, or the errno (EINVAL before Linux 5.14; EFAULT past the end
        of the file): a hint, never a failure."""
        cdef Py_ssize_t page = 4096
        cdef int rc = 0
        if self.addr == NULL or self.released:
            return 0
        start = (start // page) * page
        if start < 0:
            start = 0
        if end > self.length:
            end = self.length
        if end <= start:
            return 0
        with nogil:
            if madvise(self.addr + start, <size_t>(end - start), SL_MADV_POPULATE_READ) != 0:
                rc = errno
        return rc

    def __getbuffer__(self, Py_buffer *b, int flags):
        if (flags & PyBUF_WRITABLE) and not self.writable:
            raise BufferError("mapping is read-only")
        if self.addr != NULL:
            b.buf = self.addr
        else:
            b.buf = &_empty_byte
        b.len = self.length
        b.readonly = not self.writable
        b.itemsize = 1
        if flags & PyBUF_FORMAT:
            b.format = _format_B
        else:
            b.format = NULL
        b.ndim = 1
        b.shape = self._shape if (flags & PyBUF_ND) else NULL
        b.strides = self._strides if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
        b.suboffsets = NULL
        b.internal = NULL
        b.obj = self
        self._exports += 1

    def __releasebuffer__(self, Py_buffer *b):
        self._exports -= 1


cdef object _tuple_new = tuple.__new__

cdef extern from *:
    """
    static PyObject *sl_pair(PyObject *type, PyObject *a, PyObject *b) {
        /* an instance of a 2-field NamedTuple class, as tuple.__new__ makes it */
        PyTypeObject *t = (PyTypeObject *)type;
        PyObject *o = t->tp_alloc(t, 2);
        if (o == NULL) return NULL;
        Py_INCREF(a); Py_INCREF(b);
        PyTuple_SET_ITEM(o, 0, a);
        PyTuple_SET_ITEM(o, 1, b);
        /* two ints cannot form a cycle: keep millions of Positions away from
           the cyclic GC (CPython untracks such tuples too, but only lazily) */
        if (PyObject_GC_IsTracked(o)) PyObject_GC_UnTrack(o);
        return o;
    }
    """
    object sl_pair(object type, object a, object b)


@cython.no_gc
cdef class Record:
    """One record of a partition: NamedTuple-like (fields, unpacking, indexing, _asdict).

    Immutable. Not tracked by the cyclic GC (it holds only str, bytes, ints and
    a dict of str to bytes, which cannot form a cycle): reads allocate millions.
    """
    cdef readonly str topic
    cdef readonly int partition
    cdef readonly int64_t offset
    cdef readonly int64_t timestamp_ms
    cdef readonly object key
    cdef readonly object value
    cdef object _headers
    cdef object _hraw

    _fields = ("topic", "partition", "offset", "timestamp_ms", "key", "value", "headers")

    def __init__(self, str topic, int partition, int64_t offset, int64_t timestamp_ms,
                 key, value, headers=None):
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp_ms = timestamp_ms
        self.key = key
        self.value = value
        self._headers = {} if headers is None else dict(headers)
        self._hraw = None

    @property
    def headers(self):
        """Headers as a dict of str to bytes (a record without headers gets a fresh {})."""
        return self._headers_dict()

    cdef inline dict _headers_dict(self):
        if self._headers is None:
            self._headers = {}
        return self._headers

    def _tuple(self):
        return (self.topic, self.partition, self.offset, self.timestamp_ms, self.key,
                self.value, self.headers)

    def _asdict(self):
        return dict(zip(self._fields, self._tuple()))

    def __iter__(self):
        return iter(self._tuple())

    def __len__(self):
        return 7

    def __getitem__(self, i):
        return self._tuple()[i]

    def __eq__(self, other):
        if isinstance(other, Record):
            return self._tuple() == (<Record>other)._tuple()
        if isinstance(other, tuple):
            return self._tuple() == other
        return NotImplemented

    def __hash__(self):
        return hash((self.topic, self.partition, self.offset))

    def __repr__(self):
        return (f"Record(topic={self.topic!r}, partition={self.partition}, offset={self.offset}, "
                f"timestamp_ms={self.timestamp_ms}, key={self.key!r}, value={self.value!r}, "
                f"headers={self.headers!r})")

    def __reduce__(self):
        return (Record, self._tuple())


cdef inline Record _make_record(str topic, int partition, int64_t offset, int64_t ts,
                                const unsigned char *buf, RecInfo *r):
    cdef Record rec = Record.__new__(Record)
    rec.topic = topic
    rec.partition = partition
    rec.offset = offset
    rec.timestamp_ms = ts
    rec.key = _bytes_or_none(buf, r.kpos, r.klen)
    rec.value = _bytes_or_none(buf, r.vpos, r.vlen)
    if r.hlen != 0:
        # decoded now (not lazily) so a damaged header block raises here, at read time
        rec._headers = _decode_headers(buf + r.hpos, r.hlen, 0)
    return rec


def read_span(buf, Py_ssize_t pos, Py_ssize_t limit, int64_t expected_base, int64_t min_offset,
              Py_ssize_t max_count, str topic, int partition, list out, Py_ssize_t crc_from):
    """Decode whole batches from ``pos`` until ``limit``, the end marker, or at least
    ``max_count`` records.

    Appends Records with offset >= ``min_offset`` to ``out``. Batches starting
    at or after ``crc_from`` have their CRC checked (earlier ones were checked
    by this process already). Returns ``(pos, next_offset, ended)``: the
    position and base offset after the last batch consumed, and whether the
    end of the data was reached. Raises CorruptionError/TornTail (path None).
    """
    cdef _View v = _View(buf)
    cdef BatchInfo info
    cdef RecInfo r
    cdef Py_ssize_t p, end, i, n = 0
    cdef int64_t off
    if limit > v.n:
        limit = v.n
    while n < max_count:
        if _batch_info(v.p, pos, limit, expected_base, pos >= crc_from, &info):
            return pos, expected_base, True
        end = pos + info.length
        off = <int64_t>info.base_offset
        if off + <int64_t>info.count > min_offset:
            p = pos + HDR
            for i in range(info.nrec):
                _next_record(v.p, &p, end, info.first_ts, pos, i, &r)
                if off + i >= min_offset:
                    out.append(_make_record(topic, partition, off + i, r.ts, v.p, &r))
                    n += 1
            if p != end:
                raise CorruptionError(None, pos, "records do not fill the batch exactly")
        pos = end
        expected_base = off + info.count
    return pos, expected_base, pos >= limit


def hop(buf, Py_ssize_t pos, Py_ssize_t limit, int64_t expected_base, int64_t target):
    """Skip whole batches (headers checked, no CRC) that end at or before ``target``.

    Returns ``(pos, base_offset)`` of the batch holding ``target``, or of the
    end of the data.
    """
    cdef _View v = _View(buf)
    cdef BatchInfo info
    if limit > v.n:
        limit = v.n
    while True:
        if _batch_info(v.p, pos, limit, expected_base, False, &info):
            return pos, expected_base
        if <int64_t>(info.base_offset + info.count) > target:
            return pos, expected_base
        pos += info.length
        expected_base = info.base_offset + info.count


def time_search(buf, Py_ssize_t pos, Py_ssize_t limit, int64_t expected_base,
                int64_t running_max, int64_t target_ts):
    """First offset at or after ``pos`` whose running maximum timestamp reaches ``target_ts``.

    Returns ``(offset, pos, next_base, running_max)``; offset is -1 when the data
    ends first. Batches whose maximum stays below the target are skipped whole.
    """
    cdef _View v = _View(buf)
    cdef BatchInfo info
    cdef RecInfo r
    cdef Py_ssize_t p, end, i
    if limit > v.n:
        limit = v.n
    while True:
        if _batch_info(v.p, pos, limit, expected_base, True, &info):
            return -1, pos, expected_base, running_max
        end = pos + info.length
        if info.max_ts >= target_ts and info.max_ts > running_max:
            p = pos + HDR
            for i in range(info.nrec):
                _next_record(v.p, &p, end, info.first_ts, pos, i, &r)
                if r.ts > running_max:
                    running_max = r.ts
                if running_max >= target_ts:
                    return <int64_t>info.base_offset + i, pos, expected_base, running_max
        if info.max_ts > running_max:
            running_max = info.max_ts
        if running_max >= target_ts:
            return <int64_t>info.base_offset, pos, expected_base, running_max
        pos = end
        expected_base = info.base_offset + info.count


def scan(buf, Py_ssize_t pos, Py_ssize_t limit, int64_t expected_base, int64_t running_max,
         Py_ssize_t last_index_pos, list index_out):
    """Check every batch (CRC included) from ``pos``: recovery and verification.

    Returns ``(pos, next_offset, running_max, problem)`` where problem is None
    (reached ``limit`` or the end marker), ``("torn", file_pos, reason)`` or
    ``("corrupt", file_pos, reason)``. Index entries ``(relative_offset, pos,
    running_max_before)`` are appended to ``index_out`` by the append path's
    rule (one per INDEX_INTERVAL_BYTES), relative to the segment at position 0.
    """
    cdef _View v = _View(buf)
    cdef BatchInfo info
    cdef RecInfo r
    cdef Py_ssize_t p, end, i
    cdef int64_t seg_base = -1
    if limit > v.n:
        limit = v.n
    while True:
        try:
            if _batch_info(v.p, pos, limit, expected_base, True, &info):
                return pos, expected_base, running_max, None
            end = pos + info.length
            p = pos + HDR
            for i in range(info.nrec):
                _next_record(v.p, &p, end, info.first_ts, pos, i, &r)
                _decode_headers(v.p + r.hpos, r.hlen, pos)
            if p != end:
                raise CorruptionError(None, pos, "records do not fill the batch exactly")
        except TornTail as e:
            return pos, expected_base, running_max, ("torn", e.file_pos, e.reason)
        except CorruptionError as e:
            return pos, expected_base, running_max, ("corrupt", e.file_pos, e.reason)
        if index_out is not None and pos > 0 and pos - last_index_pos >= INDEX_INTERVAL:
            index_out.append((info.base_offset, pos, running_max))
            last_index_pos = pos
        if info.max_ts > running_max:
            running_max = info.max_ts
        pos = end
        expected_base = info.base_offset + info.count


# ---------------------------------------------------------- column memory
# A RecordBatch's columns are carved out of one block. Fresh memory costs a
# page fault and a zeroed page for every 4 KiB (or 2 MiB under transparent
# huge pages) it is first touched: for a 100,000-record read that is as much
# as the decoding itself. So blocks of a worthwhile size go back to a small
# per-process pool when their last column is dropped, and the next read reuses
# them already faulted in. Every access runs under the GIL.
DEF POOL_SLOTS = 8
DEF POOL_MIN_BLOCK = 256 * 1024          # smaller blocks: malloc's own free lists do well
DEF POOL_MAX_BYTES = 128 * 1024 * 1024   # at most this much is kept for reuse
DEF POOL_FIT = 4                         # a pooled block serves requests down to 1/4 its size
DEF COL_ALIGN = 64

cdef char *_pool_ptr[POOL_SLOTS]
cdef Py_ssize_t _pool_size[POOL_SLOTS]
cdef Py_ssize_t _pool_bytes = 0


cdef char *_pool_take(Py_ssize_t need, Py_ssize_t *size) noexcept:
    global _pool_bytes
    cdef int i, best = -1
    for i in range(POOL_SLOTS):
        if _pool_ptr[i] != NULL and need <= _pool_size[i] <= need * POOL_FIT \
                and (best < 0 or _pool_size[i] < _pool_size[best]):
            best = i
    if best < 0:
        size[0] = need
        return <char *>malloc(need if need > 0 else 1)
    cdef char *p = _pool_ptr[best]
    size[0] = _pool_size[best]
    _pool_ptr[best] = NULL
    _pool_bytes -= size[0]
    return p


cdef void _pool_give(char *p, Py_ssize_t size) noexcept:
    global _pool_bytes
    cdef int i, slot = -1, smallest = -1
    if size >= POOL_MIN_BLOCK and size <= POOL_MAX_BYTES:
        for i in range(POOL_SLOTS):
            if _pool_ptr[i] == NULL:
                slot = i
                break
            if smallest < 0 or _pool_size[i] < _pool_size[smallest]:
                smallest = i
        if slot < 0 and _pool_size[smallest] < size:  # full: the larger block is the keeper
            free(_pool_ptr[smallest])
            _pool_bytes -= _pool_size[smallest]
            _pool_ptr[smallest] = NULL
            slot = smallest
        # over the byte budget: drop the smallest blocks first
        while slot >= 0 and _pool_bytes + size > POOL_MAX_BYTES:
            smallest = -1
            for i in range(POOL_SLOTS):
                if _pool_ptr[i] != NULL and (smallest < 0 or _pool_size[i] < _pool_size[smallest]):
                    smallest = i
            if smallest < 0:
                break
            free(_pool_ptr[smallest])
            _pool_bytes -= _pool_size[smallest]
            _pool_ptr[smallest] = NULL
        if slot >= 0:
            _pool_ptr[slot] = p
            _pool_size[slot] = size
            _pool_bytes += size
            return
    free(p)


@cython.final
cdef class _ColumnBlock:
    """The memory behind one RecordBatch's columns (their numpy ``base``)."""
    cdef char *p
    cdef Py_ssize_t size

    def __dealloc__(self):
        if self.p != NULL:
            _pool_give(self.p, self.size)
            self.p = NULL


cdef _ColumnBlock _new_block(Py_ssize_t need):
    cdef _ColumnBlock b = _ColumnBlock.__new__(_ColumnBlock)
    b.p = _pool_take(need, &b.size)
    if b.p == NULL:
        raise MemoryError(f"cannot allocate {need} bytes of column memory")
    return b


cdef extern from *:
    """
    #define SL_COPY_SLACK 16
    /* Copy n bytes; short fields in 16-byte steps (one load and store each)
       instead of a call into memcpy. The steps may write up to 15 bytes past
       dst + n (the destination keeps SL_COPY_SLACK spare bytes) and read up to
       15 past src + n, so they are used only where src_end allows it. */
    static inline void sl_copy(char *dst, const unsigned char *src, Py_ssize_t n,
                               const unsigned char *src_end) {
        Py_ssize_t i = 0;
        if (n > 256 || src + n + SL_COPY_SLACK > src_end) {
            memcpy(dst, src, (size_t)n);
            return;
        }
        do {
            memcpy(dst + i, src + i, 16);
            i += 16;
        } while (i < n);
    }
    """
    int COPY_SLACK "SL_COPY_SLACK"
    void sl_copy(char *dst, const unsigned char *src, Py_ssize_t n,
                 const unsigned char *src_end) nogil


cdef inline Py_ssize_t _aligned(Py_ssize_t n) noexcept nogil:
    return (n + COL_ALIGN - 1) & ~<Py_ssize_t>(COL_ALIGN - 1)


cdef cnp.ndarray _column(_ColumnBlock b, Py_ssize_t at, Py_ssize_t n, int typenum):
    cdef cnp.npy_intp dim = n
    cdef cnp.ndarray arr = cnp.PyArray_SimpleNewFromData(1, &dim, typenum, b.p + at)
    cnp.set_array_base(arr, b)
    return arr


def read_columns(buf, Py_ssize_t pos, Py_ssize_t limit, int64_t expected_base,
                 int64_t min_offset, Py_ssize_t max_count, Py_ssize_t crc_from):
    """Columnar decode of up to ``max_count`` records with offset >= ``min_offset``
    from ``pos`` (see RecordBatch).

    Pass 1 reads batch headers only (and CRCs, for batches at or after
    ``crc_from``): they give the exact record count and a bound on the key and
    value bytes. Pass 2 walks the records once, checking their framing and
    copying every key and value into one block of column memory.
    ``columns["headers"]`` counts the records taken that carry headers (a consumer
    group's columnar poll then looks at those one by one: subjects, delays).
    Returns ``(columns, pos, base, checked)``: where to continue (a batch start
    and its base offset; a batch only partly taken is continued from its start,
    the caller skips what it already has) and the end of the last batch whose
    header and CRC were checked.
    """
    cdef _View v = _View(buf)
    cdef BatchInfo info
    cdef Py_ssize_t q = pos, p, end, n = 0, bound = 0, body, skip, take
    cdef Py_ssize_t cont_pos = pos
    cdef int64_t base = expected_base, cont_base = expected_base, off
    if limit > v.n:
        limit = v.n
    # pass 1: batch headers and CRCs -> record count, byte bound, continuation
    try:
        while n < max_count:
            if _batch_info(v.p, q, limit, base, q >= crc_from, &info):
                break
            off = <int64_t>info.base_offset
            skip = <Py_ssize_t>(min_offset - off) if min_offset > off else 0
            take = 0
            if skip < <Py_ssize_t>info.nrec:
                take = <Py_ssize_t>info.nrec - skip
                if take > max_count - n:
                    take = max_count - n
                n += take
                body = <Py_ssize_t>info.length - HDR - <Py_ssize_t>info.nrec * RHDR
                if body > 0:
                    bound += body
            q += info.length
            base = off + info.count
            if take > 0 and skip + take < <Py_ssize_t>info.nrec:
                cont_pos = q - info.length  # stopped inside this batch: continue from its start
                cont_base = off
            else:
                cont_pos = q
                cont_base = base
    except (CorruptionError, TornTail):
        # report damage in the order a batch-by-batch walk meets it
        _check_framing(v.p, pos, q)
        raise
    cdef Py_ssize_t checked = q
    # one block: offsets, timestamps, value/key boundaries, null flags, values, keys
    cdef Py_ssize_t at_o = 0, at_t = _aligned(8 * n), at_vo, at_ko, at_vn, at_kn, at_vd, at_kd
    at_vo = at_t + _aligned(8 * n)
    at_ko = at_vo + _aligned(8 * (n + 1))
    at_vn = at_ko + _aligned(8 * (n + 1))
    at_kn = at_vn + _aligned(n)
    at_vd = at_kn + _aligned(n)
    at_kd = at_vd + _aligned(bound + COPY_SLACK)
    cdef _ColumnBlock blk = _new_block(at_kd + bound + COPY_SLACK)
    cdef int64_t *o_p = <int64_t *>(blk.p + at_o)
    cdef int64_t *t_p = <int64_t *>(blk.p + at_t)
    cdef int64_t *vo_p = <int64_t *>(blk.p + at_vo)
    cdef int64_t *ko_p = <int64_t *>(blk.p + at_ko)
    cdef char *vn_p = blk.p + at_vn
    cdef char *kn_p = blk.p + at_kn
    cdef char *vd_p = blk.p + at_vd
    cdef char *kd_p = blk.p + at_kd
    cdef Py_ssize_t vcur = 0, kcur = 0, j = 0, bad = -1, stop = q, nhdr = 0
    cdef int64_t first_ts, i
    cdef uint32_t cnt, hlen
    cdef int32_t klen, vlen
    cdef const unsigned char *b = v.p
    # pass 2: the batches pass 1 checked; each record's framing is checked here with
    # _next_record's tests, inlined so the loop runs without the GIL; on a failure
    # _check_framing walks the batch again with _next_record for its exact error
    q = pos
    with nogil:
        while q < stop:
            end = q + sl_get_u32le(b + q + OFF_LEN)
            off = <int64_t>sl_get_u64le(b + q + OFF_BASE)
            cnt = 0 if b[q + OFF_ATTR] == ATTR_GAP_C else sl_get_u32le(b + q + OFF_COUNT)
            first_ts = sl_get_i64le(b + q + OFF_FIRST_TS)
            p = q + HDR
            for i in range(cnt):
                if p + RHDR > end:
                    bad = q
                    break
                klen = sl_get_i32le(b + p + R_OFF_KLEN)
                vlen = sl_get_i32le(b + p + R_OFF_VLEN)
                hlen = sl_get_u32le(b + p + R_OFF_HLEN)
                if klen < -1 or vlen < -1 or p + RHDR + (klen if klen > 0 else 0) \
                        + (vlen if vlen > 0 else 0) + <Py_ssize_t>hlen > end:
                    bad = q
                    break
                if off + i >= min_offset and j < n:
                    o_p[j] = off + i
                    t_p[j] = first_ts + sl_get_i32le(b + p + R_OFF_DELTA)
                    ko_p[j] = kcur
                    vo_p[j] = vcur
                    kn_p[j] = klen < 0
                    vn_p[j] = vlen < 0
                    if hlen > 0:
                        nhdr += 1
                    if klen > 0:
                        sl_copy(kd_p + kcur, b + p + RHDR, klen, b + v.n)
                        kcur += klen
                    if vlen > 0:
                        sl_copy(vd_p + vcur, b + p + RHDR + (klen if klen > 0 else 0), vlen,
                                b + v.n)
                        vcur += vlen
                    j += 1
                p += RHDR + (klen if klen > 0 else 0) + (vlen if vlen > 0 else 0) + hlen
            if bad >= 0 or p != end:
                bad = q
                break
            q = end
    if bad >= 0:
        _check_framing(b, bad, stop)
        raise CorruptionError(None, bad, "bad record framing")  # not reached
    ko_p[n] = kcur
    vo_p[n] = vcur
    cols = {"offsets": _column(blk, at_o, n, cnp.NPY_INT64),
            "timestamps_ms": _column(blk, at_t, n, cnp.NPY_INT64),
            "value_offsets": _column(blk, at_vo, n + 1, cnp.NPY_INT64),
            "value_data": _column(blk, at_vd, vcur, cnp.NPY_UINT8),
            "value_null": _column(blk, at_vn, n, cnp.NPY_BOOL),
            "key_offsets": _column(blk, at_ko, n + 1, cnp.NPY_INT64),
            "key_data": _column(blk, at_kd, kcur, cnp.NPY_UINT8),
            "key_null": _column(blk, at_kn, n, cnp.NPY_BOOL),
            "headers": nhdr}
    return cols, cont_pos, cont_base, checked


cdef int _check_framing(const unsigned char *b, Py_ssize_t q, Py_ssize_t stop) except -1:
    """Walk the records of the (header-checked) batches in [q, stop); raise the
    CorruptionError of the first whose framing is wrong."""
    cdef RecInfo r
    cdef Py_ssize_t end, p, i
    cdef int64_t first_ts
    while q < stop:
        end = q + sl_get_u32le(b + q + OFF_LEN)
        first_ts = sl_get_i64le(b + q + OFF_FIRST_TS)
        p = q + HDR
        for i in range(0 if b[q + OFF_ATTR] == ATTR_GAP_C else sl_get_u32le(b + q + OFF_COUNT)):
            _next_record(b, &p, end, first_ts, q, i, &r)
        if p != end:
            raise CorruptionError(None, q, "records do not fill the batch exactly")
        q = end
    return 0


cdef class Control:
    """The partition's control block in its shared ``control`` file.

    Holds the robust, process-shared append lock and the published end of the
    log. Thread- and process-safe: fields change only under the lock and are
    published through a seqlock; ``view()`` needs no lock.
    """
    cdef Mapping m
    cdef sl_control *c
    cdef readonly int users  # threads of this process taking or holding the lock
    cdef readonly bint read_only  # mapped without PROT_WRITE: only views and waits
    # Set when the store closes: ``lock()`` then raises ``closed_error()`` instead of
    # taking the lock. Checked after ``users`` is counted, with the GIL held throughout,
    # so a closer that set it and then saw ``users == 0`` lets no thread in afterwards.
    cdef public object closed_error

    def __cinit__(self, Mapping m):
        if m.length < SL_CONTROL_BYTES:
            raise ValueError("a control mapping must hold a control block")
        self.m = m
        self.c = <sl_control *>m.addr
        self.read_only = not m.writable

    cdef int _writable(self) except -1:
        if self.read_only:  # a store into the read-only map would be a SIGSEGV
            raise PermissionError("the control block is mapped read-only")
        return 0

    def state(self, bytes boot_id):
        """'ok', 'stale' (another boot: nobody can hold the lock) or 'invalid'."""
        if (<bytes>PyBytes_FromStringAndSize(self.c.magic, 8)) != CONTROL_MAGIC \
                or self.c.version != CONTROL_VERSION:
            return "invalid"
        if (<bytes>PyBytes_FromStringAndSize(self.c.boot_id, 16)) != boot_id:
            return "stale"
        return "ok"

    def initialize(self, bytes boot_id, uint64_t generation, uint64_t active_base,
                   uint64_t end_offset, uint64_t end_pos, uint64_t capacity,
                   int64_t max_timestamp_ms, uint64_t start_offset, uint64_t index_count,
                   uint64_t last_index_pos):
        """(Re)build the block. Only while no live process can hold the lock:
        the caller holds the control file's flock and the block is invalid or
        from an earlier boot."""
        self._writable()
        cdef uint32_t notify = self.c.notify_seq
        memset(self.c.magic, 0, 8)
        sl_fence()
        rc = sl_mutex_init(self.c)
        if rc:
            raise OSError(rc, strerror(rc).decode())
        self.c.flags = 0
        self.c.seq = 0
        self.c.generation = generation
        self.c.active_base = active_base
        self.c.end_offset = end_offset
        self.c.end_pos = end_pos
        self.c.pending_end = end_pos
        self.c.capacity = capacity
        self.c.max_timestamp_ms = max_timestamp_ms
        self.c.start_offset = start_offset
        self.c.recovery_point = end_pos
        self.c.index_count = index_count
        self.c.last_index_pos = last_index_pos
        self.c.synced_offset = end_offset
        self.c.notify_seq = notify
        self.c.waiters = 0
        self.c.allocated_end = end_pos
        memcpy(self.c.boot_id, PyBytes_AS_STRING(boot_id), 16)
        self.c.version = CONTROL_VERSION
        sl_fence()
        memcpy(self.c.magic, PyBytes_AS_STRING(CONTROL_MAGIC), 8)
        sl_fence()

    def lock(self):
        """Take the append lock; waits with the GIL released.

        A holder that died is survived (robust mutex): the lock is made
        consistent and the caller finds the dead writer's traces through
        ``pending_end != end_pos`` (state-based recovery). ``users`` counts
        the threads between ``lock()`` and ``unlock()``, so that closing waits
        for them before it lets go of the mapping.
        """
        cdef int rc
        self._writable()
        if self.closed_error is not None:
            raise self.closed_error()
        self.users += 1
        rc = pthread_mutex_trylock(&self.c.lock.mutex)
        if rc == EBUSY:
            with nogil:
                rc = pthread_mutex_lock(&self.c.lock.mutex)
        if rc == EOWNERDEAD:
            pthread_mutex_consistent(&self.c.lock.mutex)
            return True
        if rc:
            self.users -= 1
            raise OSError(rc, f"partition lock: {strerror(rc).decode()}")
        return False

    def unlock(self):
        cdef int rc = pthread_mutex_unlock(&self.c.lock.mutex)
        self.users -= 1
        if rc:
            raise OSError(rc, f"partition unlock: {strerror(rc).decode()}")

    def view(self):
        """(generation, active_base, end_offset, end_pos, capacity, start_offset, max_ts, index_count)."""
        cdef sl_view v
        sl_read_view(self.c, &v)
        return (v.generation, v.active_base, v.end_offset, v.end_pos, v.capacity,
                v.start_offset, v.max_timestamp_ms, sl_load64(&self.c.index_count))

    def end_offset(self):
        cdef sl_view v
        sl_read_view(self.c, &v)
        return v.end_offset

    def publish(self, generation=None, active_base=None, end_offset=None, end_pos=None,
                capacity=None, max_timestamp_ms=None, start_offset=None, index_count=None,
                last_index_pos=None, recovery_point=None, allocated_end=None,
                synced_offset=None):
        """Change published fields atomically for readers. Caller holds the lock.

        ``synced_offset`` is stored as given (it may go down only when a torn
        tail is cut below it); elsewhere it only grows (the property setter).
        """
        self._writable()
        sl_publish_begin(self.c)
        if generation is not None:
            self.c.generation = generation
        if active_base is not None:
            self.c.active_base = active_base
        if end_offset is not None:
            self.c.end_offset = end_offset
        if end_pos is not None:
            self.c.end_pos = end_pos
            self.c.pending_end = end_pos
        if capacity is not None:
            self.c.capacity = capacity
        if max_timestamp_ms is not None:
            self.c.max_timestamp_ms = max_timestamp_ms
        if start_offset is not None:
            self.c.start_offset = start_offset
        if index_count is not None:
            self.c.index_count = index_count
        if last_index_pos is not None:
            self.c.last_index_pos = last_index_pos
        if recovery_point is not None:
            self.c.recovery_point = recovery_point
        if allocated_end is not None:
            self.c.allocated_end = allocated_end
        if synced_offset is not None:
            self.c.synced_offset = synced_offset
        sl_publish_end(self.c)

    property generation:
        def __get__(self): return sl_load64(&self.c.generation)
    property pending_end:
        def __get__(self): return sl_load64(&self.c.pending_end)
    property end_pos:
        def __get__(self): return sl_load64(&self.c.end_pos)
    property capacity:
        def __get__(self): return sl_load64(&self.c.capacity)
    property allocated_end:
        def __get__(self): return sl_load64(&self.c.allocated_end)
    property index_count:
        def __get__(self): return sl_load64(&self.c.index_count)
    property last_index_pos:
        def __get__(self): return sl_load64(&self.c.last_index_pos)
    property recovery_point:
        def __get__(self): return sl_load64(&self.c.recovery_point)
        def __set__(self, uint64_t v): sl_atomic_store_u64(&self.c.recovery_point, v)
    property synced_offset:
        def __get__(self): return sl_load64(&self.c.synced_offset)
        def __set__(self, uint64_t v): sl_atomic_max_u64(&self.c.synced_offset, v)
    property deleted:
        def __get__(self): return bool(sl_load32(&self.c.flags) & SL_FLAG_DELETED)
    property notify_seq:
        def __get__(self): return sl_load32(&self.c.notify_seq)
    property notify_address:
        """Address of the ``notify_seq`` futex word (its waiter count follows it),
        for ``futex_waitv``; valid while this object's mapping lives."""
        def __get__(self): return <uintptr_t>&self.c.notify_seq

    def mark_deleted(self):
        """Flag the partition deleted so every handle in every process refuses it."""
        self._writable()
        sl_atomic_or_u32(&self.c.flags, SL_FLAG_DELETED)
        sl_notify(&self.c.notify_seq, &self.c.waiters)

    def wait(self, uint32_t seen, double timeout):
        """Block (GIL released) until an append bumps notify_seq past ``seen`` or timeout.

        Returns True when woken by a change, False on timeout.
        """
        cdef int rc
        if self.read_only:
            with nogil:
                rc = sl_wait_ro(&self.c.notify_seq, seen, timeout)
            return rc == 0
        with nogil:
            rc = sl_wait(&self.c.notify_seq, &self.c.waiters, seen, timeout)
        return rc == 0

    def notify(self):
        self._writable()
        sl_notify(&self.c.notify_seq, &self.c.waiters)


# Return codes of Writer.append: the slow path (Python, under the lock) handles them.
DEF _DELETED = -2
DEF _STALE = -3
DEF _FULL = -4
DEF _RECOVER = -5
DEF _IOERR = -6
DEF _ALLOC = -7
APPEND_ALLOC = _ALLOC
# Batches of at least this many bytes are written with pwritev, not a copy.
DEF PWRITE_MIN = 65536
# Reserve the next chunk of a segment when less than this is left of the reserved
# blocks (half of _limits.SEGMENT_ALLOCATION_CHUNK_BYTES; a test checks the pair).
DEF RESERVE_LOOKAHEAD = 2 * 1024 * 1024
RESERVE_LOOKAHEAD_BYTES = RESERVE_LOOKAHEAD
APPEND_IOERR = _IOERR
PWRITE_MIN_BYTES = PWRITE_MIN


cdef extern from *:
    """
    #include <sys/uio.h>
    static int _pwrite_batch(int fd, const unsigned char *data, Py_ssize_t n,
                             uint64_t pos, uint64_t base_offset) {
        /* base offset first (I3), then the rest of the batch; retried on short writes */
        struct iovec iov[2];
        Py_ssize_t done = 0;
        iov[0].iov_base = &base_offset; iov[0].iov_len = 8;
        iov[1].iov_base = (void *)(data + 8); iov[1].iov_len = (size_t)(n - 8);
        while (done < n) {
            ssize_t w;
            if (done < 8) {
                iov[0].iov_base = (char *)&base_offset + done; iov[0].iov_len = 8 - done;
                w = pwritev(fd, iov, 2, (off_t)(pos + done));
            } else {
                w = pwrite(fd, data + done, (size_t)(n - done), (off_t)(pos + done));
            }
            if (w < 0) { if (errno == EINTR) continue; return -1; }
            if (w == 0) { errno = EIO; return -1; }
            done += w;
        }
        return 0;
    }
    """
    int _pwrite_batch(int fd, const unsigned char *data, Py_ssize_t n, uint64_t pos,
                      uint64_t base_offset) nogil
APPEND_DELETED = _DELETED
APPEND_STALE = _STALE
APPEND_FULL = _FULL
APPEND_RECOVER = _RECOVER


cdef class Writer:
    """Appends encoded batches into the active segment of one partition.

    The hot path: take the robust lock, copy the batch into the shared
    mapping, stamp its base offset (I3), add a sparse index entry every
    INDEX_INTERVAL_BYTES, publish the new end through the seqlock, release,
    and wake waiters with a futex only when someone waits. A store into a
    MAP_SHARED page is in the page cache at once, so a returned append
    survives the death of the process. Thread-safe (the lock serialises).
    """
    cdef Control ctl
    cdef sl_control *c
    cdef Mapping seg
    cdef Mapping idx
    cdef Mapping tidx
    cdef uint64_t gen
    cdef bint attached
    cdef int fd
    cdef public int last_errno
    cdef public bint dirty    # appended since the interval syncer last looked
    cdef public bint closed   # the store was closed: the fast path refuses
    cdef Mapping topic_map
    cdef uint32_t *topic_word

    def __cinit__(self, Control ctl):
        self.ctl = ctl
        self.c = ctl.c
        self.attached = False
        self.closed = ctl.read_only  # a read-only control block never takes appends

    def attach(self, uint64_t generation, Mapping seg, Mapping idx, Mapping tidx, int fd=-1):
        """Point at the active segment (its map and, for large batches, its file
        descriptor) and its index maps of ``generation``."""
        self.fd = fd
        self.seg = seg
        self.idx = idx
        self.tidx = tidx
        self.gen = generation
        self.attached = True

    property generation:
        def __get__(self): return self.gen if self.attached else None

    def release(self):
        """Let go of the segment and index mappings this writer points into
        (``Mapping.release``); the store is closing. Call after ``closed`` is
        set and no thread is inside the lock."""
        for m in (self.seg, self.idx, self.tidx):
            if m is not None:
                m.release()
        self.attached = False

    def set_topic_notify(self, Mapping m):
        """Also bump the topic-wide wake-up word (a Notifier's mapping) after each append."""
        if m.length < 8 or not m.writable:
            raise ValueError("a notifier mapping must be writable and hold 8 bytes")
        self.topic_map = m
        self.topic_word = <uint32_t *>m.addr

    cdef int64_t _append_locked(self, const unsigned char *data, Py_ssize_t n, uint32_t count,
                                int64_t max_ts) noexcept nogil:
        cdef sl_control *c = self.c
        cdef uint64_t pos, rel, icount, last
        if c.flags & SL_FLAG_DELETED:
            return _DELETED
        if c.pending_end != c.end_pos:
            return _RECOVER
        if not self.attached or c.generation != self.gen:
            return _STALE
        pos = c.end_pos
        if pos + <uint64_t>n > c.capacity or pos + <uint64_t>n > <uint64_t>self.seg.length:
            return _FULL
        if pos + <uint64_t>n > c.allocated_end or \
                (pos + <uint64_t>n + RESERVE_LOOKAHEAD > c.allocated_end
                 and c.allocated_end < c.capacity):
            # blocks not reserved yet, or soon to run out: the slow path fallocates the
            # next chunk now, while this one still has room, so that the prefault thread
            # populates it before the appends get there
            return _ALLOC
        c.pending_end = pos + n
        if n >= PWRITE_MIN and self.fd >= 0:
            # Large batches go through pwritev: the same page cache as the map,
            # without a page fault per fresh page of the mapping.
            if _pwrite_batch(self.fd, data, n, pos, c.end_offset) != 0:
                self.last_errno = errno
                return _IOERR  # pending_end stays: the next lock holder zeroes (I5)
        else:
            memcpy(self.seg.addr + pos, data, n)
            sl_store_u64le(self.seg.addr + pos, c.end_offset)
        rel = c.end_offset - c.active_base
        icount = c.index_count
        last = c.last_index_pos
        if pos > 0 and pos - last >= INDEX_INTERVAL:
            if <Py_ssize_t>((icount + 1) * 8) <= self.idx.length and \
                    <Py_ssize_t>((icount + 1) * 12) <= self.tidx.length:
                sl_store_u32le(self.idx.addr + icount * 8, <uint32_t>rel)
                sl_store_u32le(self.idx.addr + icount * 8 + 4, <uint32_t>pos)
                sl_store_i64le(self.tidx.addr + icount * 12, c.max_timestamp_ms)
                sl_store_u32le(self.tidx.addr + icount * 12 + 8, <uint32_t>rel)
                icount += 1
                last = pos
        sl_publish_begin(c)
        c.end_offset = c.end_offset + count
        c.end_pos = pos + n
        c.pending_end = pos + n
        c.index_count = icount
        c.last_index_pos = last
        if max_ts > c.max_timestamp_ms:
            c.max_timestamp_ms = max_ts
        sl_publish_end(c)
        sl_notify(&c.notify_seq, &c.waiters)
        if self.topic_word != NULL:
            sl_notify(self.topic_word, self.topic_word + 1)
        return <int64_t>(c.end_offset - count)

    def append(self, bytes data, uint32_t count, int64_t max_ts):
        """Append one encoded batch; returns its base offset, or an APPEND_* code (< 0)
        telling the caller to take the slow path (the lock is not held then)."""
        return self._append(data, count, max_ts)

    cdef int64_t _append(self, bytes data, uint32_t count, int64_t max_ts) except? -100:
        cdef int rc
        cdef int64_t result
        cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = len(data)
        if self.closed:
            return _STALE
        self.ctl.users += 1  # closing waits until no thread is inside the lock
        try:
            rc = pthread_mutex_trylock(&self.c.lock.mutex)
            if rc == EBUSY:
                with nogil:
                    rc = pthread_mutex_lock(&self.c.lock.mutex)
            if rc == EOWNERDEAD:
                pthread_mutex_consistent(&self.c.lock.mutex)
                pthread_mutex_unlock(&self.c.lock.mutex)
                return _RECOVER
            if rc:
                raise OSError(rc, f"partition lock: {strerror(rc).decode()}")
            result = self._append_locked(p, n, count, max_ts)
            pthread_mutex_unlock(&self.c.lock.mutex)
        finally:
            self.ctl.users -= 1
        if result >= 0:
            self.dirty = True
        return result

    cdef int64_t _append_record(self, object key, Py_ssize_t klen, bytes value,
                                int64_t ts) except? -100:
        """One record (no headers) encoded straight into the mapping under the lock:
        no intermediate ``bytes``. The same bytes as ``_encode_record`` + ``_append``;
        the CRC is computed over the mapped copy before the batch is published, and
        ``pending_end`` covers the copy as for any append (I5). Returns the offset, or
        an APPEND_* code (< 0) with nothing written: the caller takes the usual path."""
        cdef int rc
        cdef int64_t result
        cdef Py_ssize_t vlen = len(value)
        cdef Py_ssize_t n = HDR + RHDR + (klen if klen > 0 else 0) + vlen
        cdef sl_control *c = self.c
        cdef uint64_t pos
        cdef char *p
        if self.closed or n >= PWRITE_MIN:
            return _STALE
        self.ctl.users += 1  # closing waits until no thread is inside the lock
        try:
            rc = pthread_mutex_trylock(&c.lock.mutex)
            if rc == EBUSY:
                with nogil:
                    rc = pthread_mutex_lock(&c.lock.mutex)
            if rc == EOWNERDEAD:
                pthread_mutex_consistent(&c.lock.mutex)
                pthread_mutex_unlock(&c.lock.mutex)
                return _RECOVER
            if rc:
                raise OSError(rc, f"partition lock: {strerror(rc).decode()}")
            # the checks of _append_locked, before any byte is written
            if c.flags & SL_FLAG_DELETED:
                result = _DELETED
            elif c.pending_end != c.end_pos:
                result = _RECOVER
            elif not self.attached or c.generation != self.gen:
                result = _STALE
            else:
                pos = c.end_pos
                if pos + <uint64_t>n > c.capacity or pos + <uint64_t>n > <uint64_t>self.seg.length:
                    result = _FULL
                elif pos + <uint64_t>n > c.allocated_end or \
                        (pos + <uint64_t>n + RESERVE_LOOKAHEAD > c.allocated_end
                         and c.allocated_end < c.capacity):
                    result = _ALLOC
                else:
                    c.pending_end = pos + n
                    p = self.seg.addr + pos
                    _put_header(p, n, 1, ts, ts)
                    sl_store_u32le(p + HDR + R_OFF_DELTA, 0)
                    sl_store_u32le(p + HDR + R_OFF_KLEN, <uint32_t>(<int32_t>klen))
                    sl_store_u32le(p + HDR + R_OFF_VLEN, <uint32_t>(<int32_t>vlen))
                    sl_store_u32le(p + HDR + R_OFF_HLEN, 0)
                    if klen > 0:
                        memcpy(p + HDR + RHDR, PyBytes_AS_STRING(key), klen)
                    memcpy(p + HDR + RHDR + (klen if klen > 0 else 0),
                           PyBytes_AS_STRING(value), vlen)
                    sl_store_u32le(p + OFF_CRC, _crc_c(_crc_xor, <const unsigned char *>p
                                                       + OFF_MAGIC, <unsigned long>(n - OFF_MAGIC))
                                   ^ _crc_xor)
                    sl_store_u64le(p, c.end_offset)  # I3: outside the CRC
                    result = self._publish_record_locked(pos, n, ts)
            pthread_mutex_unlock(&c.lock.mutex)
        finally:
            self.ctl.users -= 1
        if result >= 0:
            self.dirty = True
        return result

    cdef int64_t _publish_record_locked(self, uint64_t pos, Py_ssize_t n,
                                        int64_t max_ts) noexcept nogil:
        """The tail of _append_locked for one record in place at ``pos``: the sparse
        index entry, the seqlock publication, the wake-ups."""
        cdef sl_control *c = self.c
        cdef uint64_t rel, icount, last
        rel = c.end_offset - c.active_base
        icount = c.index_count
        last = c.last_index_pos
        if pos > 0 and pos - last >= INDEX_INTERVAL:
            if <Py_ssize_t>((icount + 1) * 8) <= self.idx.length and \
                    <Py_ssize_t>((icount + 1) * 12) <= self.tidx.length:
                sl_store_u32le(self.idx.addr + icount * 8, <uint32_t>rel)
                sl_store_u32le(self.idx.addr + icount * 8 + 4, <uint32_t>pos)
                sl_store_i64le(self.tidx.addr + icount * 12, c.max_timestamp_ms)
                sl_store_u32le(self.tidx.addr + icount * 12 + 8, <uint32_t>rel)
                icount += 1
                last = pos
        sl_publish_begin(c)
        c.end_offset = c.end_offset + 1
        c.end_pos = pos + n
        c.pending_end = pos + n
        c.index_count = icount
        c.last_index_pos = last
        if max_ts > c.max_timestamp_ms:
            c.max_timestamp_ms = max_ts
        sl_publish_end(c)
        sl_notify(&c.notify_seq, &c.waiters)
        if self.topic_word != NULL:
            sl_notify(self.topic_word, self.topic_word + 1)
        return <int64_t>(c.end_offset - 1)

    def append_locked(self, bytes data, uint32_t count, int64_t max_ts):
        """As ``append``, for a caller that holds the lock (the slow path)."""
        cdef int64_t r = self._append_locked(<const unsigned char *>PyBytes_AS_STRING(data),
                                             len(data), count, max_ts)
        if r >= 0:
            self.dirty = True
        return r


cdef extern from "<sched.h>" nogil:
    int sched_yield()

DEF COMMIT_DELAY_S = 0.0005  # a leader waits at least this long for its group to queue,
DEF COMMIT_DELAY_MAX_S = 0.001  # or as long as the previous sync took, up to this


cdef inline double _mono_s() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return t.tv_sec + t.tv_nsec * 1e-9


@cython.final
cdef class GroupCommit:
    """Group commit for the threads of one process appending to one partition.

    ``sync_to(target, sync)`` returns once everything below offset ``target``
    is durable. The first thread to arrive becomes the leader and calls
    ``sync()`` (which makes the current end durable and returns it) for every
    thread queued behind it; the others sleep on a futex with the GIL released
    and are woken together when the leader's sync covers them. All state
    changes happen under the GIL; only the sleeping is done without it.

    Who is queued is counted under the GIL (``queued``): a thread counts itself
    once when it starts waiting, and the leader takes the count to zero just
    before its ``sync()`` reads the end, so the count is exactly the threads
    the next sync has still to serve. (The futex's own sleeper count also
    holds threads a sync has already woken that have not run yet, which made
    a leader start its sync before the group had queued.)
    """
    cdef uint64_t synced
    cdef bint syncing
    cdef uint32_t word[2]  # [0]: bumped after every sync; [1]: sleepers (sl_wait)
    cdef uint32_t last_group  # threads the previous sync served
    cdef uint32_t queued  # threads waiting for a sync that has not read the end yet
    cdef uint64_t epoch  # bumped each time a leader takes ``queued`` to zero (starts at 1)
    cdef double last_sync_s  # how long the previous sync() took

    def __cinit__(self, uint64_t synced=0):
        self.synced = synced
        self.syncing = False
        self.word[0] = 0
        self.word[1] = 0
        self.last_group = 1
        self.queued = 0
        self.epoch = 1
        self.last_sync_s = 0

    property synced:
        def __get__(self): return self.synced

    property syncs:
        """Syncs made so far (a counter that wraps at 2**32): appends served per sync
        is what group commit is measured by."""
        def __get__(self): return self.word[0]

    def sync_to(self, uint64_t target, sync, bint delay=False):
        """Durable below ``target``. ``delay``: other threads append here too, so
        the leader lets them run before taking the end to cover (until as many
        threads as its previous sync served have queued, for at most as long as
        the previous sync took, within COMMIT_DELAY_S..COMMIT_DELAY_MAX_S), and one
        sync serves more of them (PostgreSQL's commit_delay idea)."""
        cdef uint32_t seen
        cdef uint64_t end
        cdef uint64_t counted_in = 0  # the epoch this thread last counted itself in (0: none)
        cdef double started, deadline
        while True:
            if self.synced >= target:
                return
            if not self.syncing:
                self.syncing = True
                break
            if counted_in != self.epoch:  # not counted since the last sync read the end
                counted_in = self.epoch
                self.queued += 1
            seen = self.word[0]
            with nogil:
                sl_wait(&self.word[0], &self.word[1], seen, 1.0)
        end = self.synced
        try:
            if counted_in == self.epoch:
                self.queued -= 1  # the leader is not among those it waits for
            if delay:
                # Let the threads the previous sync served append and queue again,
                # so that this sync serves them too: each needs the GIL in turn
                # (tens of µs apiece on a busy machine), so wait as long as a sync
                # takes (COMMIT_DELAY_S at least, COMMIT_DELAY_MAX_S at most): a
                # group that does not come costs at most one more sync's time.
                started = _mono_s()
                deadline = started + min(max(COMMIT_DELAY_S, self.last_sync_s), COMMIT_DELAY_MAX_S)
                while self.queued + 1 < self.last_group and _mono_s() < deadline:
                    with nogil:
                        sched_yield()
            # Every thread counted so far appended before the end that sync() reads:
            # this sync serves them all, and later arrivals count for the next one.
            # The group to wait for next time: this one, or one thread fewer than
            # the last when fewer came (a group that missed the deadline once
            # is waited for again; threads that stopped appending cost one
            # delay each, once).
            if self.queued + 1 >= self.last_group:
                self.last_group = self.queued + 1
            else:
                self.last_group -= 1
            self.queued = 0
            self.epoch += 1
            started = _mono_s()
            end = sync()
            self.last_sync_s = _mono_s() - started
        finally:
            if end > self.synced:
                self.synced = end
            self.syncing = False
            sl_notify(&self.word[0], &self.word[1])


cdef class Notifier:
    """A futex word + waiter count in a small shared file: wake-ups across processes.

    Every append to any partition of a topic bumps the topic's word, so one
    consumer can sleep on all partitions at once without burning a core.
    Thread- and process-safe.
    """
    cdef Mapping m
    cdef uint32_t *word

    def __cinit__(self, Mapping m):
        if m.length < 8:
            raise ValueError("a notifier mapping must hold 8 bytes")
        self.m = m
        self.word = <uint32_t *>m.addr

    property mapping:
        def __get__(self): return self.m

    property seq:
        def __get__(self): return sl_load32(self.word)
    property address:
        """Address of the futex word (its waiter count follows it), for
        ``futex_waitv``; valid while this object's mapping lives."""
        def __get__(self): return <uintptr_t>self.word

    def wait(self, uint32_t seen, double timeout):
        """Block (GIL released) until the word moves past ``seen``; False on timeout."""
        cdef int rc
        if not self.m.writable:  # a read-only open cannot count itself as a waiter
            with nogil:
                rc = sl_wait_ro(self.word, seen, timeout)
            return rc == 0
        with nogil:
            rc = sl_wait(self.word, self.word + 1, seen, timeout)
        return rc == 0

    def notify(self):
        if not self.m.writable:
            raise PermissionError("the notifier is mapped read-only")
        sl_notify(self.word, self.word + 1)

    property config_word:
        """The topic's configuration counter (the third word of the file): every change of
        the topic's stored options moves it, so each process sees that its copy is stale."""
        def __get__(self):
            if self.m.length < 12:
                return 0
            return sl_load32(self.word + 2)

    def set_config_word(self, uint32_t value):
        """Publish a change of the topic's stored options to every process (see config_word)."""
        if not self.m.writable or self.m.length < 12:
            raise PermissionError("the notifier is mapped read-only")
        sl_atomic_store_u32(self.word + 2, value)

    def swap_config_word(self, uint32_t expected, uint32_t value):
        """Set the configuration counter to ``value`` if it still is ``expected``; True
        when it was set (a writer of a newer value in between wins)."""
        if not self.m.writable or self.m.length < 12:
            raise PermissionError("the notifier is mapped read-only")
        return bool(sl_cas_u32(self.word + 2, expected, value))


WAITV_MAX = SL_WAITV_MAX


def futex_waitv(addresses, values, counted, double timeout):
    """Sleep (GIL released) until one of the futex words at ``addresses`` differs
    from its entry in ``values``, or ``timeout`` seconds pass (< 0: no end).

    Each address must be a 32-bit word of a mapping the caller keeps alive for
    the call (``Notifier.address``, ``Control.notify_address``); where
    ``counted`` is true the word's waiter count (the word after it) is raised
    for the sleep so that appenders issue their wake-up. At most ``WAITV_MAX``
    words. Returns the index of a word woken (>= 0) or -errno: -EAGAIN (a word
    already differed), -ETIMEDOUT, -EINTR, -ENOSYS (a kernel before 5.16).
    """
    cdef uint64_t addrs[SL_WAITV_MAX]
    cdef uint32_t vals[SL_WAITV_MAX]
    cdef unsigned char cnt[SL_WAITV_MAX]
    cdef unsigned n = len(addresses)
    cdef unsigned i
    cdef int rc
    if n > <unsigned>SL_WAITV_MAX or len(values) != n or len(counted) != n:
        raise ValueError(f"futex_waitv takes up to {SL_WAITV_MAX} words, with one value and flag each")
    for i in range(n):
        addrs[i] = addresses[i]
        if addrs[i] == 0 or addrs[i] % 4:
            raise ValueError("a futex word address must be non-zero and 4-byte aligned")
        vals[i] = values[i]
        cnt[i] = 1 if counted[i] else 0
    with nogil:
        rc = sl_waitv(addrs, vals, cnt, n, timeout)
    return rc




cdef inline int64_t _now_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000 + ts.tv_nsec // 1000000


cdef class Appender:
    """The per-record append fast path of a Topic, all in C.

    Handles the common call (bytes value, bytes or no key, no headers, no
    msg_id): picks the partition (Kafka's murmur2, or round-robin), encodes
    and checksums the batch before taking the lock (I3), and hands it to the
    partition's Writer. Anything else (validation errors, str keys, headers,
    msg_id, a full segment, a closed store) goes to ``slow`` /
    ``slow_write``, the Python paths that raise the proper errors.
    Thread-safe: the Writer's lock serialises; the round-robin counter is
    advisory.
    """
    cdef list writers
    cdef int n
    cdef Py_ssize_t max_record
    cdef uint64_t rr
    cdef object slow
    cdef object slow_write
    cdef object sync
    cdef object position
    cdef Notifier watched
    cdef uint32_t *config_word
    cdef uint32_t config_seen
    cdef public bint need_key  # a compacted topic: a keyless append goes to ``slow`` (refused)

    def __cinit__(self, list writers, Py_ssize_t max_record, slow, slow_write, sync, position):
        self.config_word = NULL
        self.need_key = False
        self.writers = writers
        self.n = len(writers)
        self.max_record = max_record
        self.slow = slow
        self.slow_write = slow_write
        self.sync = sync
        self.position = position
        self.rr = 0

    def reconfigure(self, list writers, Py_ssize_t max_record, sync, uint32_t seen):
        """Take a topic's changed options in place (more partitions, another record limit),
        so that a caller holding this bound ``append`` keeps the fast path."""
        self.writers = writers
        self.n = len(writers)
        self.max_record = max_record
        self.sync = sync
        self.config_seen = seen

    def watch(self, Notifier notifier, uint32_t seen):
        """Hand every call to ``slow`` once the topic's configuration counter moves past
        ``seen`` (another process changed the topic's options: partitions, limits)."""
        if notifier.m.length < 12:
            return
        self.watched = notifier
        self.config_word = notifier.word + 2
        self.config_seen = seen

    def append(self, value, key=None, headers=None, timestamp_ms=None, msg_id=None,
               subject=None):
        """Append one record; see Topic.append."""
        cdef int64_t ts, r
        cdef Py_ssize_t klen = 0
        cdef int p = 0
        cdef uint32_t h
        cdef Writer w
        if subject is not None:
            return self.slow(value, key, headers, timestamp_ms, msg_id, subject)
        if headers is not None or msg_id is not None or type(value) is not bytes \
                or (key is not None and type(key) is not bytes) \
                or (key is None and self.need_key) \
                or (self.config_word != NULL and sl_load32(self.config_word) != self.config_seen):
            return self.slow(value, key, headers, timestamp_ms, msg_id)
        if timestamp_ms is None:
            ts = _now_ms()
        elif type(timestamp_ms) is int and 0 <= timestamp_ms < (1 << 62):
            ts = timestamp_ms
        else:
            return self.slow(value, key, headers, timestamp_ms, msg_id)
        if key is not None:
            klen = len(<bytes>key)
        if len(<bytes>value) + klen > self.max_record:
            return self.slow(value, key, headers, timestamp_ms, msg_id)
        if self.n > 1:
            if key is None:
                p = self.rr % self.n
                self.rr += 1
            else:
                h = sl_murmur2(<const unsigned char *>PyBytes_AS_STRING(key), klen)
                p = (h & 0x7fffffff) % self.n
        w = <Writer>self.writers[p]
        r = -1
        if _crc_c != NULL:  # the C CRC: the record is encoded in place under the lock
            r = w._append_record(key, -1 if key is None else klen, <bytes>value, ts)
        if r < 0:
            data = _encode_record(key, value, None, ts)
            r = w._append(data, 1, ts)
            if r < 0:
                r = self.slow_write(p, data, 1, ts)
        if self.sync is not None:
            self.sync(p, r + 1)
        return sl_pair(self.position, p, r)

    def encode_many(self, values, keys, int64_t ts):
        """One batch of every record, for a single-partition topic; None when the
        call needs the general path (not lists, not bytes, too large, ...)."""
        cdef Py_ssize_t n, i, total = HDR, klen, vlen, p
        cdef char *out_p
        cdef object v, k
        if self.n != 1 or type(values) is not list or (keys is None and self.need_key):
            return None
        n = len(<list>values)
        if n == 0 or (keys is not None and (type(keys) is not list or len(<list>keys) != n)):
            return None
        for i in range(n):
            v = (<list>values)[i]
            if type(v) is not bytes:
                return None
            vlen = len(<bytes>v)
            klen = 0
            if keys is not None:
                k = (<list>keys)[i]
                if k is None and self.need_key:
                    return None
                if k is not None:
                    if type(k) is not bytes:
                        return None
                    klen = len(<bytes>k)
            if vlen + klen > self.max_record:
                return None
            total += RHDR + vlen + klen
        out = PyBytes_FromStringAndSize(NULL, total)
        out_p = PyBytes_AS_STRING(out)
        _put_header(out_p, total, <uint32_t>n, ts, ts)
        p = HDR
        for i in range(n):
            v = (<list>values)[i]
            k = None if keys is None else (<list>keys)[i]
            klen = -1 if k is None else len(<bytes>k)
            vlen = len(<bytes>v)
            sl_store_u32le(out_p + p + R_OFF_DELTA, 0)
            sl_store_u32le(out_p + p + R_OFF_KLEN, <uint32_t>(<int32_t>klen))
            sl_store_u32le(out_p + p + R_OFF_VLEN, <uint32_t>(<int32_t>vlen))
            sl_store_u32le(out_p + p + R_OFF_HLEN, 0)
            p += RHDR
            if klen > 0:
                memcpy(out_p + p, PyBytes_AS_STRING(k), klen)
                p += klen
            memcpy(out_p + p, PyBytes_AS_STRING(v), vlen)
            p += vlen
        sl_store_u32le(out_p + OFF_CRC,
                       _crc(<const unsigned char *>out_p + OFF_MAGIC, total - OFF_MAGIC))
        return out

    def positions(self, int p, int64_t base, Py_ssize_t n):
        """[Position(p, base), Position(p, base + 1), ...] without Python frames."""
        cdef list out = [None] * n
        cdef Py_ssize_t i
        cdef object part = p
        for i in range(n):
            out[i] = sl_pair(self.position, part, base + i)
        return out
