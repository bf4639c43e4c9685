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
