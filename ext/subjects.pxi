# Subject filters (docs/messages.md): NATS wildcard matching over the record headers of
# batches in place. The readable reference is streamlog/backends/local/codec.py
# (``py_subject_matches``, ``PySubjectFilter``, ``py_match_span``); both must agree on every
# input (tests/property/test_subject_parity.py).

cdef extern from *:
    """
    #include <string.h>
    /* memcmp(a, b, n) == 0 for the short strings of subjects: eight bytes at a time
       (unaligned loads), then byte by byte; no libc call for a variable length. */
    static inline int sl_same(const unsigned char *a, const unsigned char *b, Py_ssize_t n) {
        while (n >= 8) {
            uint64_t x, y;
            memcpy(&x, a, 8); memcpy(&y, b, 8);
            if (x != y) return 0;
            a += 8; b += 8; n -= 8;
        }
        while (n > 0) {
            if (*a != *b) return 0;
            a++; b++; n--;
        }
        return 1;
    }
    /* Ask for the cache lines of [p, p + n) ahead of a walk (hints only: never fault). */
    static inline void sl_prefetch(const unsigned char *p, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i += 64) __builtin_prefetch(p + i, 0, 3);
    }
    /* whether the header name at p (nlen bytes) is "subject" */
    static inline int sl_is_subject_name(const unsigned char *p, Py_ssize_t nlen) {
        return nlen == 7 && memcmp(p, "subject", 7) == 0;
    }
    """
    bint _same "sl_same"(const unsigned char *a, const unsigned char *b, Py_ssize_t n) nogil
    bint _is_subject_name "sl_is_subject_name"(const unsigned char *p, Py_ssize_t n) nogil
    void _prefetch "sl_prefetch"(const unsigned char *p, Py_ssize_t n) nogil


cdef inline bint _match_one(const unsigned char *s, Py_ssize_t sn,
                     const unsigned char *pt, Py_ssize_t pn) noexcept nogil:
    """Whether subject ``s`` matches pattern ``pt``: tokens split on '.', '*' is any one
    token, a last '>' one or more tokens, any other token matches itself byte for byte."""
    cdef Py_ssize_t i = 0, j = 0, se, pe
    cdef bint s_more = True, p_more = True  # a token remains (b"" is one empty token)
    while True:
        if not p_more:
            return not s_more
        if not s_more:
            return False
        pe = j
        while pe < pn and pt[pe] != 46:  # '.'
            pe += 1
        if pe == pn and pe - j == 1 and pt[j] == 62:  # a last '>': the rest, at least one
            return True
        se = i
        while se < sn and s[se] != 46:
            se += 1
        if not (pe - j == 1 and pt[j] == 42):  # '*' takes any one token
            if pe - j != se - i or not _same(pt + j, s + i, se - i):
                return False
        if pe < pn:
            j = pe + 1
        else:
            p_more = False
        if se < sn:
            i = se + 1
        else:
            s_more = False


@cython.final
cdef class SubjectFilter:
    """A compiled list of subject patterns (NATS wildcards); a subject matches if any does.

    Immutable and thread-safe. ``patterns`` are str (UTF-8 encoded here) or bytes.
    """
    cdef list _keep
    cdef const unsigned char **_p
    cdef Py_ssize_t *_n
    cdef Py_ssize_t *_lit  # bytes of whole literal tokens (with their dots) before a wildcard
    cdef Py_ssize_t count
    cdef readonly tuple patterns

    def __cinit__(self, patterns):
        self._p = NULL
        self._n = NULL
        self._lit = NULL

    def __init__(self, patterns):
        cdef Py_ssize_t i
        keep = [p.encode("utf-8") if isinstance(p, str) else bytes(p) for p in patterns]
        self._keep = keep
        self.patterns = tuple(keep)
        self.count = len(keep)
        self._p = <const unsigned char **>malloc(sizeof(char *) * (self.count + 1))
        self._n = <Py_ssize_t *>malloc(sizeof(Py_ssize_t) * (self.count + 1))
        self._lit = <Py_ssize_t *>malloc(sizeof(Py_ssize_t) * (self.count + 1))
        if self._p == NULL or self._n == NULL or self._lit == NULL:
            raise MemoryError()
        for i in range(self.count):
            self._p[i] = <const unsigned char *>PyBytes_AS_STRING(keep[i])
            self._n[i] = len(<bytes>keep[i])
            lit = 0
            for tok in (<bytes>keep[i]).split(b"."):
                if tok == b"*" or tok == b">":
                    break
                lit += len(tok) + 1
            # a pattern without wildcards: compared whole (its length, no final dot)
            self._lit[i] = min(lit, self._n[i])

    def __dealloc__(self):
        free(<void *>self._p)
        free(self._n)
        free(self._lit)

    cdef inline bint _matches(self, const unsigned char *s, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t i, lit
        for i in range(self.count):
            # The literal tokens first, in one comparison: most subjects differ there.
            lit = self._lit[i]
            if lit == self._n[i]:
                if n == lit and _same(s, self._p[i], n):
                    return True
                continue
            if n < lit or not _same(s, self._p[i], lit):
                continue
            if _match_one(s + lit, n - lit, self._p[i] + lit, self._n[i] - lit):
                return True
        return False

    def matches(self, subject) -> bool:
        """Whether ``subject`` (bytes, or str as UTF-8) matches one of the patterns."""
        if isinstance(subject, str):
            subject = subject.encode("utf-8")
        cdef _View v = _View(subject)
        return self._matches(v.p, v.n)

    def __repr__(self):
        return f"SubjectFilter({[p.decode('utf-8', 'replace') for p in self.patterns]!r})"


cdef inline int _subject_of(const unsigned char *p, Py_ssize_t n, Py_ssize_t batch_pos,
                     Py_ssize_t *at, Py_ssize_t *length) except -1:
    """Find the (last) ``subject`` header in a record's header block, in place.

    Returns 1 and its value's position and length, 0 without one; the framing
    is checked as ``decode_headers`` checks it (header names are not decoded).
    """
    cdef Py_ssize_t q = 0
    cdef uint16_t nlen
    cdef uint32_t vlen
    cdef int found = 0
    while q < n:
        if q + 2 > n:
            raise CorruptionError(None, batch_pos, "header name length runs past the record")
        nlen = sl_get_u16le(p + q)
        q += 2
        if q + nlen + 4 > n:
            raise CorruptionError(None, batch_pos, "header runs past the record")
        if _is_subject_name(p + q, nlen):
            found = 1
            at[0] = q + nlen + 4
        q += nlen
        vlen = sl_get_u32le(p + q)
        q += 4
        if q + vlen > n:
            raise CorruptionError(None, batch_pos, "header value runs past the record")
        if found and at[0] == q:
            length[0] = vlen
        q += vlen
    return found


# Bytes ahead of the walk whose cache lines are asked for: enough to cover a memory
# latency's worth of small batches.
DEF _PREFETCH_AHEAD = 2048


def match_span(buf, Py_ssize_t pos, Py_ssize_t limit, int64_t expected_base,
               int64_t min_offset, int64_t max_offset, Py_ssize_t max_matches,
               SubjectFilter flt, str topic, int partition, list out, Py_ssize_t crc_from):
    """Look at the subjects of records ``[min_offset, max_offset)`` from the batch at ``pos``
    and append a Record for each one that ``flt`` matches, up to ``max_matches``.

    Records that do not match cost a walk over their header block, no object.
    Batches starting at or after ``crc_from`` have their CRC checked. Returns
    ``(pos, base, ended, scanned_to)``: where to continue (the start of the last
    batch looked into and its base offset, so a batch left part way is walked
    again from its start), whether the end of the data was reached, and the
    offset after the last record looked at (every record in ``[min_offset,
    scanned_to)`` was either appended or does not match). Raises
    CorruptionError/TornTail (path None).
    """
    cdef _View v = _View(buf)
    cdef BatchInfo info
    cdef RecInfo r
    cdef Py_ssize_t p, end, i, found = 0, at = 0, n = 0, ahead = pos + _PREFETCH_AHEAD
    cdef int64_t off, scanned = min_offset
    if limit > v.n:
        limit = v.n
    if max_matches <= 0 or min_offset >= max_offset:
        return pos, expected_base, False, scanned
    while True:
        if _batch_info(v.p, pos, limit, expected_base, pos >= crc_from, &info):
            return pos, expected_base, True, scanned
        end = pos + info.length
        off = <int64_t>info.base_offset
        if end + _PREFETCH_AHEAD < limit and end > ahead:
            # the walk is a chain of dependent loads (each batch's length gives the next
            # batch's place): ask for the bytes a little ahead before it gets there
            _prefetch(v.p + ahead, end + _PREFETCH_AHEAD - ahead)
            ahead = end + _PREFETCH_AHEAD
        if off + <int64_t>info.count > min_offset:
            p = pos + HDR
            for i in range(info.nrec):
                _next_record(v.p, &p, end, info.first_ts, pos, i, &r)
                if off + i < min_offset:
                    continue
                if off + i >= max_offset:
                    return pos, off, False, scanned
                scanned = off + i + 1
                if r.hlen and _subject_of(v.p + r.hpos, r.hlen, pos, &at, &n) and \
                        flt._matches(v.p + r.hpos + at, n):
                    out.append(_make_record(topic, partition, off + i, r.ts, v.p, &r))
                    found += 1
                    if found >= max_matches:
                        if i + 1 < <Py_ssize_t>info.nrec:
                            return pos, off, False, scanned
                        if p != end:
                            raise CorruptionError(None, pos, "records do not fill the batch "
                                                  "exactly")
                        return end, off + info.count, end >= limit, scanned
            if p != end:
                raise CorruptionError(None, pos, "records do not fill the batch exactly")
            # a gap batch (or the tail of this one): offsets with nothing to match
            if off + <int64_t>info.count > scanned:
                scanned = min(off + <int64_t>info.count, max_offset)
        pos = end
        expected_base = off + info.count
        if expected_base >= max_offset:
            return pos, expected_base, pos >= limit, scanned


# ---------------------------------------------------------------- subject index
# A per-segment, in-memory index of the subjects of its records, built as a filtered
# poll first walks the segment (and extended as the segment grows): per batch its
# place, base offset and record count, per record a small id of its subject. A poll
# then passes over batches whose records' subjects its filter does not match without
# touching their bytes (a cold segment costs a chain of dependent cache misses to walk).
# It holds positions and copies of subjects, never pointers into a mapping, so a
# remapped segment keeps its index; the owner drops it when the bytes may change
# (a torn tail cut, a file replaced by compaction).

cdef extern from *:
    """
    typedef struct { int64_t base; uint32_t pos; uint32_t count; uint32_t rec0; uint32_t gap; } sl_ibatch;
    /* a hash of a short string, eight bytes at a time (unaligned loads) */
    static inline uint64_t sl_fnv(const unsigned char *p, Py_ssize_t n) {
        uint64_t h = 1469598103934665603ULL ^ (uint64_t)n, x;
        while (n >= 8) {
            memcpy(&x, p, 8);
            h = (h ^ x) * 0x9E3779B97F4A7C15ULL;
            h ^= h >> 29;
            p += 8; n -= 8;
        }
        x = 0;
        memcpy(&x, p, n);
        h = (h ^ x) * 0x9E3779B97F4A7C15ULL;
        return h ^ (h >> 32);
    }
    """
    ctypedef struct sl_ibatch:
        int64_t base
        uint32_t pos
        uint32_t count
        uint32_t rec0
        uint32_t gap
    uint64_t _fnv "sl_fnv"(const unsigned char *p, Py_ssize_t n) noexcept nogil

from libc.stdlib cimport realloc
from cpython.bytearray cimport PyByteArray_AS_STRING

DEF _NO_SUBJECT = 0xFFFF
DEF _MAX_SUBJECTS = 0xFFF0
DEF _MAX_FILTERS = 32
DEF _FAR = 65536  # offsets past the indexed end beyond which a poll walks instead


@cython.final
cdef class SubjectIndex:
    """The subjects of one segment's records, for filtered polls (``match``).

    Memory: 24 bytes per batch and 2 per record indexed, plus each distinct
    subject once. A segment with more than 65520 distinct subjects stops being
    indexed (``match`` returns None and the caller walks the bytes instead).
    Not for concurrent use: a second caller while one is inside gets None.
    """
    cdef sl_ibatch *_b
    cdef Py_ssize_t nb, cap_b
    cdef uint16_t *_ids
    cdef Py_ssize_t nr, cap_r
    cdef list _subjects           # bytes, by id
    cdef const unsigned char **_sp
    cdef Py_ssize_t *_sn
    cdef Py_ssize_t cap_s
    cdef int32_t *_slots          # open addressing: subject id or -1
    cdef Py_ssize_t nslots
    cdef dict _ok                 # SubjectFilter -> bytearray: per subject id, matches
    cdef readonly Py_ssize_t end_pos   # bytes indexed from 0 (a batch start)
    cdef readonly int64_t end_base     # the offset after the batches indexed
    cdef readonly bint overflowed
    cdef bint _busy

    def __cinit__(self, int64_t base_offset):
        self._b = NULL
        self._ids = NULL
        self._sp = NULL
        self._sn = NULL
        self._slots = NULL

    def __init__(self, int64_t base_offset):
        self.end_pos = 0
        self.end_base = base_offset
        self._subjects = []
        self._ok = {}
        self.nslots = 64
        self._slots = <int32_t *>malloc(sizeof(int32_t) * self.nslots)
        if self._slots == NULL:
            raise MemoryError()
        memset(self._slots, 0xFF, sizeof(int32_t) * self.nslots)

    def __dealloc__(self):
        free(self._b)
        free(self._ids)
        free(<void *>self._sp)
        free(self._sn)
        free(self._slots)

    @property
    def batches(self) -> int:
        """Batches indexed."""
        return self.nb

    @property
    def subjects(self) -> int:
        """Distinct subjects seen."""
        return len(self._subjects)

    cdef int _grow(self) except -1:
        cdef void *q
        if self.nb == self.cap_b:
            q = realloc(self._b, sizeof(sl_ibatch) * (self.cap_b * 2 + 256))
            if q == NULL:
                raise MemoryError()
            self._b = <sl_ibatch *>q
            self.cap_b = self.cap_b * 2 + 256
        return 0

    cdef int _room_records(self, Py_ssize_t n) except -1:
        cdef void *q
        cdef Py_ssize_t cap
        if self.nr + n > self.cap_r:
            cap = max(self.cap_r * 2 + 1024, self.nr + n)
            q = realloc(self._ids, sizeof(uint16_t) * cap)
            if q == NULL:
                raise MemoryError()
            self._ids = <uint16_t *>q
            self.cap_r = cap
        return 0

    cdef int _subject_id(self, const unsigned char *s, Py_ssize_t n) except -2:
        """The id of subject ``s`` (added if new); -1 when the table is full."""
        cdef uint64_t h = _fnv(s, n)
        cdef Py_ssize_t mask = self.nslots - 1, k = <Py_ssize_t>(h & <uint64_t>mask), i
        cdef int32_t sid
        cdef int32_t *slots
        cdef void *q
        while True:
            sid = self._slots[k]
            if sid < 0:
                break
            if self._sn[sid] == n and _same(self._sp[sid], s, n):
                return sid
            k = (k + 1) & mask
        sid = <int32_t>len(self._subjects)
        if sid >= _MAX_SUBJECTS:
            return -1
        if sid == self.cap_s:
            self.cap_s = self.cap_s * 2 + 16
            q = realloc(<void *>self._sp, sizeof(char *) * self.cap_s)
            if q == NULL:
                raise MemoryError()
            self._sp = <const unsigned char **>q
            q = realloc(self._sn, sizeof(Py_ssize_t) * self.cap_s)
            if q == NULL:
                raise MemoryError()
            self._sn = <Py_ssize_t *>q
        b = PyBytes_FromStringAndSize(<const char *>s, n)
        self._subjects.append(b)
        self._sp[sid] = <const unsigned char *>PyBytes_AS_STRING(b)
        self._sn[sid] = n
        self._slots[k] = sid
        if (sid + 1) * 2 > self.nslots:  # keep the table at most half full
            slots = <int32_t *>malloc(sizeof(int32_t) * self.nslots * 2)
            if slots == NULL:
                raise MemoryError()
            memset(slots, 0xFF, sizeof(int32_t) * self.nslots * 2)
            mask = self.nslots * 2 - 1
            for i in range(sid + 1):
                k = <Py_ssize_t>(_fnv(self._sp[i], self._sn[i]) & <uint64_t>mask)
                while slots[k] >= 0:
                    k = (k + 1) & mask
                slots[k] = <int32_t>i
            free(self._slots)
            self._slots = slots
            self.nslots *= 2
        return sid

    cdef int _extend(self, const unsigned char *buf, Py_ssize_t limit, int64_t until,
                     Py_ssize_t crc_from) except -1:
        """Index batches from ``end_pos`` until one covers ``until - 1`` or the data ends.

        0: stopped there; 1: the data ends at ``end_pos``; 2: too many subjects.
        Raises CorruptionError/TornTail at a damaged batch (the ones before it stay)."""
        cdef BatchInfo info
        cdef RecInfo r
        cdef Py_ssize_t pos, p, end, i, at = 0, n = 0
        cdef int sid
        cdef sl_ibatch *e
        cdef Py_ssize_t ahead = self.end_pos + _PREFETCH_AHEAD
        while self.end_base < until:
            pos = self.end_pos
            if pos + _PREFETCH_AHEAD < limit and pos + _PREFETCH_AHEAD > ahead:
                # a chain of dependent loads, as in match_span: ask for the bytes ahead
                _prefetch(buf + ahead, pos + _PREFETCH_AHEAD - ahead)
                ahead = pos + _PREFETCH_AHEAD
            if pos > <Py_ssize_t>0xFFFFFFFF:
                return 2
            if _batch_info(buf, pos, limit, self.end_base, pos >= crc_from, &info):
                return 1
            end = pos + info.length
            if <Py_ssize_t>info.nrec > info.length // RHDR:  # before sizing anything by it
                raise CorruptionError(None, pos, "more records than the batch can hold")
            self._room_records(info.nrec)
            p = pos + HDR
            for i in range(info.nrec):
                _next_record(buf, &p, end, info.first_ts, pos, i, &r)
                if r.hlen and _subject_of(buf + r.hpos, r.hlen, pos, &at, &n):
                    sid = self._subject_id(buf + r.hpos + at, n)
                    if sid < 0:
                        return 2
                    self._ids[self.nr + i] = <uint16_t>sid
                else:
                    self._ids[self.nr + i] = _NO_SUBJECT
            if p != end:
                raise CorruptionError(None, pos, "records do not fill the batch exactly")
            self._grow()
            e = &self._b[self.nb]
            e.base = <int64_t>info.base_offset
            e.pos = <uint32_t>pos
            e.count = info.count
            e.rec0 = <uint32_t>self.nr
            e.gap = info.nrec == 0
            self.nb += 1
            self.nr += info.nrec
            self.end_pos = end
            self.end_base = <int64_t>info.base_offset + info.count
        return 0

    cdef bytearray _table(self, SubjectFilter flt):
        """Per subject id, whether ``flt`` matches it (computed for new ids only)."""
        cdef bytearray ok = self._ok.get(flt)
        cdef Py_ssize_t i, have
        if ok is None:
            if len(self._ok) >= _MAX_FILTERS:
                self._ok.clear()
            ok = bytearray()
            self._ok[flt] = ok
        have = len(ok)
        if have < len(self._subjects):
            ok.extend(bytes(len(self._subjects) - have))
            for i in range(have, len(self._subjects)):
                ok[i] = flt._matches(self._sp[i], self._sn[i])
        return ok

    cdef Py_ssize_t _first_batch(self, int64_t offset) noexcept:
        """The first indexed batch that covers an offset >= ``offset`` (nb if none)."""
        cdef Py_ssize_t lo = 0, hi = self.nb, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._b[mid].base + <int64_t>self._b[mid].count <= offset:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef Py_ssize_t _batch_of_record(self, Py_ssize_t k, Py_ssize_t lo) noexcept:
        """The batch holding record ordinal ``k`` (< nr): the last with rec0 <= k, at or
        after batch ``lo`` (whose rec0 <= k). Galloping from ``lo``: the next match is
        usually near, and the entries near it are the ones in the CPU caches."""
        cdef Py_ssize_t hi, mid, step = 1
        while True:
            hi = lo + step
            if hi >= self.nb:
                hi = self.nb
                break
            if <Py_ssize_t>self._b[hi].rec0 > k:
                break
            lo = hi
            step <<= 1
        while lo < hi:
            mid = (lo + hi) >> 1
            if <Py_ssize_t>self._b[mid].rec0 <= k:
                lo = mid + 1
            else:
                hi = mid
        return lo - 1

    def match(self, buf, Py_ssize_t limit, int64_t min_offset, int64_t max_offset,
              Py_ssize_t max_matches, SubjectFilter flt, str topic, int partition,
              list out, Py_ssize_t crc_from):
        """``match_span`` from the segment's start (position 0, its base offset), by
        the index: the same records appended to ``out`` and the same
        ``(pos, base, ended, scanned)``. Batches not yet indexed are indexed as
        the poll gets to them (their CRCs checked from ``crc_from``); a damaged
        one raises only once the poll reaches it. None when the index cannot
        answer (too many subjects, data shorter than indexed, ``min_offset`` more
        than 65536 past the indexed end, in use): walk instead.
        """
        if self._busy or self.overflowed:
            return None
        self._busy = True  # set before anything that could run other Python code
        cdef _View v
        try:
            v = _View(buf)
            if limit > v.n:
                limit = v.n
            if limit < self.end_pos or min_offset > self.end_base + _FAR:
                # a poll far past what is indexed (a group starting near the end of a
                # large segment) walks from the offset index instead of indexing all
                # before it
                return None
            return self._match(v, limit, min_offset, max_offset, max_matches, flt, topic,
                               partition, out, crc_from)
        finally:
            self._busy = False

    cdef object _match(self, _View v, Py_ssize_t limit, int64_t min_offset,
                       int64_t max_offset, Py_ssize_t max_matches, SubjectFilter flt,
                       str topic, int partition, list out, Py_ssize_t crc_from):
        cdef BatchInfo info
        cdef RecInfo r
        cdef Py_ssize_t b, i, j, p, pos, end, found = 0, mb, rend, k, t
        cdef int64_t off, scanned = min_offset, count
        cdef int state = 0
        cdef bytearray ok
        cdef const unsigned char *okp
        cdef Py_ssize_t nok
        cdef uint16_t sid
        cdef object err = None
        cdef sl_ibatch e
        if max_matches <= 0 or min_offset >= max_offset:
            return 0, (self._b[0].base if self.nb else self.end_base), False, scanned
        try:
            state = self._extend(v.p, limit, max(min_offset + 1, max_offset), crc_from)
        except (CorruptionError, TornTail) as x:
            err = x
        if state == 2:
            self.overflowed = True
            return None
        ok = self._table(flt)
        okp = <const unsigned char *>PyByteArray_AS_STRING(ok)
        nok = len(ok)
        b = self._first_batch(min_offset)
        mb = self._first_batch(max_offset - 1)  # where the walk would stop at max_offset
        rend = self.nr if mb >= self.nb else \
            self._b[mb].rec0 + (0 if self._b[mb].gap else self._b[mb].count)
        while True:
            if b < self.nb:
                # Pass over the batches before the next matching record (or before the
                # one holding max_offset - 1) by the record ids alone.
                e = self._b[b]
                k = e.rec0
                if not e.gap and e.base < min_offset:
                    k += min_offset - e.base
                while k < rend:
                    sid = self._ids[k]
                    if sid != _NO_SUBJECT and okp[sid]:
                        break
                    k += 1
                t = self._batch_of_record(k, b) if k < rend else mb
                if t > b:
                    off = self._b[t].base if t < self.nb else self.end_base
                    if off > scanned:
                        scanned = min(off, max_offset)
                    b = t
            if b >= self.nb:
                if err is not None:
                    raise err
                # the data ends here (state 1), or max_offset was reached
                return self.end_pos, self.end_base, True, scanned
            e = self._b[b]
            off = e.base
            count = e.count
            pos = e.pos
            end = self._b[b + 1].pos if b + 1 < self.nb else self.end_pos
            if not e.gap:
                for i in range(count):
                    if off + i < min_offset:
                        continue
                    if off + i >= max_offset:
                        return pos, off, False, scanned
                    scanned = off + i + 1
                    sid = self._ids[e.rec0 + i]
                    if sid != _NO_SUBJECT and sid < nok and okp[sid]:
                        if _batch_info(v.p, pos, limit, off, False, &info):
                            raise CorruptionError(None, pos, "a batch indexed earlier is gone")
                        p = pos + HDR
                        for j in range(i + 1):
                            _next_record(v.p, &p, end, info.first_ts, pos, j, &r)
                        out.append(_make_record(topic, partition, off + i, r.ts, v.p, &r))
                        found += 1
                        if found >= max_matches:
                            if i + 1 < count:
                                return pos, off, False, scanned
                            return end, off + count, end >= limit, scanned
            if off + count > scanned:
                scanned = min(off + count, max_offset)
            if off + count >= max_offset:
                return end, off + count, end >= limit, scanned
            b += 1
