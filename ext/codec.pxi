# The record-batch codec: the fast twin of streamlog/_format.py (docs/format.md).

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t
from libc.string cimport memcpy, memset

import numpy as np
cimport numpy as cnp
cnp.import_array()

import os as _os

import crc32c as _crc32c_module
import crc32c._crc32c  # noqa: F401  (the module whose C function _crc calls)
from streamlog.errors import CorruptionError, TornTail

cdef extern from "Python.h":
    object PyMemoryView_FromMemory(char *mem, Py_ssize_t size, int flags)
    int PyBUF_READ

cdef extern from "native.h":
    void sl_store_u64le(char *p, uint64_t v) nogil
    void sl_store_u32le(char *p, uint32_t v) nogil
    void sl_store_i64le(char *p, int64_t v) nogil
    uint64_t sl_get_u64le(const unsigned char *p) nogil
    uint32_t sl_get_u32le(const unsigned char *p) nogil
    int32_t sl_get_i32le(const unsigned char *p) nogil
    int64_t sl_get_i64le(const unsigned char *p) nogil
    uint16_t sl_get_u16le(const unsigned char *p) nogil

cdef extern from *:
    """
    #define SL_LENGTH_XOR 0xFFFFFFFFu
    """
    uint32_t LENGTH_XOR "SL_LENGTH_XOR"

# Field offsets, derived from the field sizes in the same order as _format.BATCH_FIELDS.
DEF _SZ_BASE = 8
DEF _SZ_LEN = 4
DEF _SZ_CHECK = 4
DEF _SZ_CRC = 4
DEF _SZ_MAGIC = 2
DEF _SZ_VERSION = 1
DEF _SZ_ATTR = 1
DEF _SZ_COUNT = 4
DEF _SZ_TS = 8
DEF OFF_BASE = 0
DEF OFF_LEN = OFF_BASE + _SZ_BASE
DEF OFF_CHECK = OFF_LEN + _SZ_LEN
DEF OFF_CRC = OFF_CHECK + _SZ_CHECK
DEF OFF_MAGIC = OFF_CRC + _SZ_CRC
DEF OFF_VERSION = OFF_MAGIC + _SZ_MAGIC
DEF OFF_ATTR = OFF_VERSION + _SZ_VERSION
DEF OFF_COUNT = OFF_ATTR + _SZ_ATTR
DEF OFF_FIRST_TS = OFF_COUNT + _SZ_COUNT
DEF OFF_MAX_TS = OFF_FIRST_TS + _SZ_TS
DEF HDR = OFF_MAX_TS + _SZ_TS
DEF R_OFF_DELTA = 0
DEF R_OFF_KLEN = 4
DEF R_OFF_VLEN = 8
DEF R_OFF_HLEN = 12
DEF RHDR = 16
DEF MAGIC_C = 0x4C53
DEF VERSION_C = 1
DEF ATTR_GAP_C = 1  # attributes bit 0: a gap batch (offsets removed by compaction, no records)

HEADER_SIZE = HDR
ATTR_GAP = ATTR_GAP_C
RECORD_HEADER_SIZE = RHDR
CRC_START = OFF_MAGIC
MAGIC = MAGIC_C
VERSION = VERSION_C
LENGTH_CHECK_XOR = LENGTH_XOR
BATCH_OFFSETS = {
    "base_offset": OFF_BASE, "batch_length": OFF_LEN, "length_check": OFF_CHECK,
    "crc": OFF_CRC, "magic": OFF_MAGIC, "version": OFF_VERSION, "attributes": OFF_ATTR,
    "record_count": OFF_COUNT, "first_timestamp_ms": OFF_FIRST_TS,
    "max_timestamp_ms": OFF_MAX_TS,
}
RECORD_OFFSETS = {"timestamp_delta": R_OFF_DELTA, "key_length": R_OFF_KLEN,
                  "value_length": R_OFF_VLEN, "headers_length": R_OFF_HLEN}

cdef object _crc_fn = _crc32c_module.crc32c

# The crc32c package does the CRC arithmetic (hardware CRC32C where present).
# Its Python entry point costs a memoryview and an argument parse per call,
# several times the CRC of a small batch, so the extension calls the C function
# the package's module exports for its own use, found by name in the loaded
# module and accepted only if it agrees with crc32c.crc32c on known inputs;
# otherwise every CRC goes through crc32c.crc32c.
ctypedef uint32_t (*_crc_c_t)(uint32_t crc, const unsigned char *data,
                              unsigned long length) noexcept nogil
cdef _crc_c_t _crc_c = NULL
cdef uint32_t _crc_xor = 0
DEF CRC_NOGIL_BYTES = 65536  # larger inputs are checksummed without the GIL


cdef extern from "<dlfcn.h>" nogil:
    void *dlopen(const char *filename, int flags)
    void *dlsym(void *handle, const char *symbol)
    int RTLD_NOW
    int RTLD_NOLOAD


cdef _crc_c_t _find_crc_c(uint32_t *xor_out):
    """The crc32c module's own C CRC function, or NULL (with *xor_out its convention)."""
    cdef bytes path
    cdef void *handle
    cdef _crc_c_t fn
    cdef bytes probe
    cdef uint32_t x
    try:
        path = _os.fsencode(_crc32c_module._crc32c.__file__)
    except (AttributeError, TypeError):
        return NULL
    handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD)  # the module is loaded: its own handle
    if handle == NULL:
        return NULL
    if _crc32c_module.hardware_based:
        names = (b"_crc32c_hw_adler", b"_crc32c_hw_arm64")
    else:
        names = (b"_crc32c_sw_slicing_by_8",)
    probes = [b"", b"a", b"123456789", bytes(range(256)) * 5 + b"tail"]
    for name in names:
        fn = <_crc_c_t>dlsym(handle, name)
        if fn == NULL:
            continue
        for x in (0xFFFFFFFF, 0):
            if all(((fn(x, <const unsigned char *><char *>probe, len(probe)) ^ x)
                    == _crc_fn(probe)) for probe in probes):
                xor_out[0] = x
                return fn
    return NULL


_crc_c = _find_crc_c(&_crc_xor)
CRC_DIRECT = _crc_c != NULL  # for tests and diagnostics


cdef inline uint32_t _crc(const unsigned char *p, Py_ssize_t n) except? 0xFFFFFFFF:
    cdef uint32_t r
    if _crc_c != NULL:
        if n >= CRC_NOGIL_BYTES:
            with nogil:
                r = _crc_c(_crc_xor, p, <unsigned long>n) ^ _crc_xor
            return r
        return _crc_c(_crc_xor, p, <unsigned long>n) ^ _crc_xor
    # a memoryview straight over our pointer avoids any copy
    return _crc_fn(PyMemoryView_FromMemory(<char *>p, n, PyBUF_READ))


def crc32c(data):
    """CRC32C (Castagnoli) of a bytes-like object."""
    return _crc_fn(data)


cdef class _View:
    """A read-only borrowed buffer: pointer + length, released on dealloc."""
    cdef Py_buffer buf
    cdef const unsigned char *p
    cdef Py_ssize_t n
    cdef bint held

    def __cinit__(self, obj):
        PyObject_GetBuffer(obj, &self.buf, PyBUF_SIMPLE)
        self.held = True
        self.p = <const unsigned char *>self.buf.buf
        self.n = self.buf.len

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.buf)


cdef inline Py_ssize_t _blen(object b) except -1:
    # length of a bytes-like object (bytes fast path)
    if type(b) is bytes:
        return len(<bytes>b)
    return memoryview(b).nbytes


cdef Py_ssize_t _headers_size(object headers) except -1:
    cdef Py_ssize_t total = 0
    if not headers:
        return 0
    for name, value in headers:
        total += 6 + _blen(name) + _blen(value)
    return total


cdef inline Py_ssize_t _put(char *dst, object b) except -1:
    cdef Py_ssize_t n
    cdef _View v
    if type(b) is bytes:
        n = len(<bytes>b)
        memcpy(dst, PyBytes_AS_STRING(b), n)
        return n
    v = _View(b)
    memcpy(dst, v.p, v.n)
    return v.n


cdef Py_ssize_t _put_headers(char *dst, object headers) except -1:
    cdef Py_ssize_t p = 0, n
    if not headers:
        return 0
    for name, value in headers:
        n = _blen(name)
        dst[p] = <char>(n & 0xFF)
        dst[p + 1] = <char>((n >> 8) & 0xFF)
        p += 2
        p += _put(dst + p, name)
        sl_store_u32le(dst + p, <uint32_t>_blen(value))
        p += 4
        p += _put(dst + p, value)
    return p


cdef inline void _put_header(char *p, Py_ssize_t length, uint32_t count,
                             int64_t first_ts, int64_t max_ts) noexcept nogil:
    sl_store_u64le(p + OFF_BASE, 0)
    sl_store_u32le(p + OFF_LEN, <uint32_t>length)
    sl_store_u32le(p + OFF_CHECK, (<uint32_t>length) ^ LENGTH_XOR)
    sl_store_u32le(p + OFF_CRC, 0)
    p[OFF_MAGIC] = <char>(MAGIC_C & 0xFF)
    p[OFF_MAGIC + 1] = <char>(MAGIC_C >> 8)
    p[OFF_VERSION] = VERSION_C
    p[OFF_ATTR] = 0
    sl_store_u32le(p + OFF_COUNT, count)
    sl_store_i64le(p + OFF_FIRST_TS, first_ts)
    sl_store_i64le(p + OFF_MAX_TS, max_ts)


def encode_batch(keys, values, headers, timestamps_ms):
    """Encode records as one batch with base_offset 0 (the append sets it).

    Same contract as ``_format.encode_batch``.
    """
    cdef Py_ssize_t count = len(values), i, total = HDR, klen, vlen, hlen, p
    cdef int64_t first_ts, max_ts, ts, delta
    cdef char *out_p
    if count == 0:
        raise ValueError("a batch needs at least one record")
    if len(timestamps_ms) != count:
        raise ValueError("timestamps_ms must have one entry per record")
    first_ts = timestamps_ms[0]
    max_ts = first_ts
    for i in range(count):
        ts = timestamps_ms[i]
        delta = ts - first_ts
        if delta < -2147483648 or delta > 2147483647:
            raise ValueError("timestamps of one batch must lie within 2**31 ms of each other")
        if ts > max_ts:
            max_ts = ts
        total += RHDR
        if keys is not None and keys[i] is not None:
            total += _blen(keys[i])
        if values[i] is not None:
            total += _blen(values[i])
        if headers is not None:
            total += _headers_size(headers[i])
    out = PyBytes_FromStringAndSize(NULL, total)
    out_p = PyBytes_AS_STRING(out)
    _put_header(out_p, total, <uint32_t>count, first_ts, max_ts)
    p = HDR
    for i in range(count):
        key = None if keys is None else keys[i]
        value = values[i]
        hdrs = None if headers is None else headers[i]
        klen = -1 if key is None else _blen(key)
        vlen = -1 if value is None else _blen(value)
        hlen = _headers_size(hdrs)
        ts = timestamps_ms[i]
        sl_store_u32le(out_p + p + R_OFF_DELTA, <uint32_t>(<int32_t>(ts - first_ts)))
        sl_store_u32le(out_p + p + R_OFF_KLEN, <uint32_t>(<int32_t>klen))
        sl_store_u32le(out_p + p + R_OFF_VLEN, <uint32_t>(<int32_t>vlen))
        sl_store_u32le(out_p + p + R_OFF_HLEN, <uint32_t>hlen)
        p += RHDR
        if key is not None:
            p += _put(out_p + p, key)
        if value is not None:
            p += _put(out_p + p, value)
        p += _put_headers(out_p + p, hdrs)
    sl_store_u32le(out_p + OFF_CRC, _crc(<const unsigned char *>out_p + OFF_MAGIC, total - OFF_MAGIC))
    return out


def encode_record(key, value, headers, int64_t timestamp_ms):
    """Encode one record as a batch of one (the per-record append path)."""
    return _encode_record(key, value, headers, timestamp_ms)


cdef bytes _encode_record(object key, object value, object headers, int64_t timestamp_ms):
    cdef Py_ssize_t klen = -1, vlen = -1, hlen, total, p
    cdef char *out_p
    if key is not None:
        klen = _blen(key)
    if value is not None:
        vlen = _blen(value)
    hlen = _headers_size(headers)
    total = HDR + RHDR + (klen if klen > 0 else 0) + (vlen if vlen > 0 else 0) + hlen
    out = PyBytes_FromStringAndSize(NULL, total)
    out_p = PyBytes_AS_STRING(out)
    _put_header(out_p, total, 1, timestamp_ms, timestamp_ms)
    p = HDR
    sl_store_u32le(out_p + p + R_OFF_DELTA, 0)
    sl_store_u32le(out_p + p + R_OFF_KLEN, <uint32_t>(<int32_t>klen))
    sl_store_u32le(out_p + p + R_OFF_VLEN, <uint32_t>(<int32_t>vlen))
    sl_store_u32le(out_p + p + R_OFF_HLEN, <uint32_t>hlen)
    p += RHDR
    if key is not None:
        p += _put(out_p + p, key)
    if value is not None:
        p += _put(out_p + p, value)
    if hlen:
        _put_headers(out_p + p, headers)
    sl_store_u32le(out_p + OFF_CRC, _crc(<const unsigned char *>out_p + OFF_MAGIC, total - OFF_MAGIC))
    return <bytes>out


def set_base_offset(buf, Py_ssize_t pos, uint64_t base_offset):
    """Write the base offset of the batch at ``pos`` (outside the CRC range)."""
    memoryview(buf)[pos:pos + 8] = (<bytes>PyBytes_FromStringAndSize(<char *>&base_offset, 8))


cdef struct BatchInfo:
    uint64_t base_offset
    Py_ssize_t length
    uint32_t count     # offsets the batch covers
    uint32_t nrec      # records it holds: count, or 0 for a gap batch
    int64_t first_ts
    int64_t max_ts


cdef inline bint _all_zero(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if p[i]:
            return False
    return True


cdef int _batch_info(const unsigned char *buf, Py_ssize_t pos, Py_ssize_t limit,
                     int64_t expected_base, bint check_crc, BatchInfo *info) except -1:
    """0: a valid batch is described in *info; 1: end of data. Raises otherwise."""
    cdef Py_ssize_t avail = limit - pos
    cdef const unsigned char *p = buf + pos
    cdef uint32_t length, check, crc, actual
    if avail <= 0:
        return 1
    if avail < HDR:
        if _all_zero(p, avail):
            return 1
        raise TornTail(pos, f"{avail} bytes left, a batch header needs {HDR}")
    length = sl_get_u32le(p + OFF_LEN)
    check = sl_get_u32le(p + OFF_CHECK)
    if length == 0 and check == 0 and _all_zero(p, HDR):
        return 1
    if (length ^ check) != LENGTH_XOR:
        raise CorruptionError(None, pos, "batch length fails its check word")
    if length < HDR + RHDR and not (length == HDR and p[OFF_ATTR] == ATTR_GAP_C):
        raise CorruptionError(None, pos, f"batch length {length} is below the minimum")
    if length > avail:
        raise TornTail(pos, f"batch of {length} bytes but only {avail} remain")
    if sl_get_u16le(p + OFF_MAGIC) != MAGIC_C or p[OFF_VERSION] != VERSION_C:
        raise CorruptionError(None, pos, f"bad magic {sl_get_u16le(p + OFF_MAGIC):#06x} "
                                         f"or version {p[OFF_VERSION]}")
    if check_crc:
        crc = sl_get_u32le(p + OFF_CRC)
        actual = _crc(p + OFF_MAGIC, length - OFF_MAGIC)
        if actual != crc:
            raise CorruptionError(None, pos, f"CRC32C mismatch (stored {crc:#010x}, "
                                             f"computed {actual:#010x})")
    if p[OFF_ATTR] & ~ATTR_GAP_C:
        raise CorruptionError(None, pos, f"reserved attribute bits set ({p[OFF_ATTR]:#04x})")
    if p[OFF_ATTR] == ATTR_GAP_C and length != HDR:
        raise CorruptionError(None, pos, "a gap batch holds records")
    info.base_offset = sl_get_u64le(p + OFF_BASE)
    info.length = length
    info.count = sl_get_u32le(p + OFF_COUNT)
    info.nrec = 0 if p[OFF_ATTR] == ATTR_GAP_C else info.count
    info.first_ts = sl_get_i64le(p + OFF_FIRST_TS)
    info.max_ts = sl_get_i64le(p + OFF_MAX_TS)
    if info.count == 0 or info.max_ts < info.first_ts:
        raise CorruptionError(None, pos, "record count or timestamps out of range")
    if expected_base >= 0 and info.base_offset != <uint64_t>expected_base:
        raise CorruptionError(None, pos, f"base offset {info.base_offset} where {expected_base} "
                                         "was expected (I2)")
    return 0


def batch_info(buf, Py_ssize_t pos, Py_ssize_t limit, int64_t expected_base_offset,
               bint check_crc):
    """Check the batch at ``pos``; same contract as ``_format.batch_info``."""
    cdef _View v = _View(buf)
    cdef BatchInfo info
    if limit > v.n:
        limit = v.n
    if _batch_info(v.p, pos, limit, expected_base_offset, check_crc, &info):
        return (0, 0, 0, 0)
    return (info.length, info.count, info.first_ts, info.max_ts)


cdef dict _decode_headers(const unsigned char *p, Py_ssize_t n, Py_ssize_t batch_pos):
    cdef dict out = {}
    cdef Py_ssize_t q = 0
    cdef uint16_t nlen
    cdef uint32_t vlen
    while q < n:
        if q + 2 > n:
            raise CorruptionError(None, batch_pos, "header name length runs past the record")
        nlen = sl_get_u16le(p + q)
        q += 2
        if q + nlen + 4 > n:
            raise CorruptionError(None, batch_pos, "header runs past the record")
        try:
            name = (<bytes>PyBytes_FromStringAndSize(<const char *>p + q, nlen)).decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptionError(None, batch_pos, "header name is not UTF-8") from None
        q += nlen
        vlen = sl_get_u32le(p + q)
        q += 4
        if q + vlen > n:
            raise CorruptionError(None, batch_pos, "header value runs past the record")
        out[name] = PyBytes_FromStringAndSize(<const char *>p + q, vlen)
        q += vlen
    return out


def decode_headers(raw, Py_ssize_t batch_pos=0):
    """Decode a record's header block into a dict of str to bytes."""
    cdef _View v = _View(raw)
    return _decode_headers(v.p, v.n, batch_pos)


cdef struct RecInfo:
    int64_t ts
    Py_ssize_t kpos
    int32_t klen
    Py_ssize_t vpos
    int32_t vlen
    Py_ssize_t hpos
    uint32_t hlen


cdef inline int _next_record(const unsigned char *buf, Py_ssize_t *p, Py_ssize_t end,
                             int64_t first_ts, Py_ssize_t batch_pos, Py_ssize_t i,
                             RecInfo *r) except -1:
    cdef Py_ssize_t q = p[0], need
    if q + RHDR > end:
        raise CorruptionError(None, batch_pos, f"record {i} header runs past the batch end")
    r.ts = first_ts + sl_get_i32le(buf + q + R_OFF_DELTA)
    r.klen = sl_get_i32le(buf + q + R_OFF_KLEN)
    r.vlen = sl_get_i32le(buf + q + R_OFF_VLEN)
    r.hlen = sl_get_u32le(buf + q + R_OFF_HLEN)
    q += RHDR
    if r.klen < -1 or r.vlen < -1:
        raise CorruptionError(None, batch_pos, f"record {i} has a negative length")
    need = (r.klen if r.klen > 0 else 0) + (r.vlen if r.vlen > 0 else 0) + <Py_ssize_t>r.hlen
    if q + need > end:
        raise CorruptionError(None, batch_pos, f"record {i} runs past the batch end")
    r.kpos = q
    q += r.klen if r.klen > 0 else 0
    r.vpos = q
    q += r.vlen if r.vlen > 0 else 0
    r.hpos = q
    q += r.hlen
    p[0] = q
    return 0


cdef inline object _bytes_or_none(const unsigned char *buf, Py_ssize_t pos, int32_t n):
    if n < 0:
        return None
    return PyBytes_FromStringAndSize(<const char *>buf + pos, n)


def decode_batch(buf, Py_ssize_t pos, Py_ssize_t limit, int64_t expected_base_offset=-1):
    """Check and decode the batch at ``pos``; same contract as ``_format.decode_batch``."""
    cdef _View v = _View(buf)
    cdef BatchInfo info
    cdef RecInfo r
    cdef Py_ssize_t p, end, i
    if limit > v.n:
        limit = v.n
    if _batch_info(v.p, pos, limit, expected_base_offset, True, &info):
        raise TornTail(pos, "no batch here")
    end = pos + info.length
    p = pos + HDR
    out = []
    for i in range(info.nrec):
        _next_record(v.p, &p, end, info.first_ts, pos, i, &r)
        out.append((info.base_offset + i, r.ts, _bytes_or_none(v.p, r.kpos, r.klen),
                    _bytes_or_none(v.p, r.vpos, r.vlen), _decode_headers(v.p + r.hpos, r.hlen, pos)))
    if p != end:
        raise CorruptionError(None, pos, "records do not fill the batch exactly")
    return info.base_offset, info.length, out


cdef extern from *:
    """
    static inline uint32_t sl_murmur2(const unsigned char *data, Py_ssize_t length) {
        const uint32_t seed = 0x9747b28cu, m = 0x5bd1e995u;
        const int r = 24;
        uint32_t h = seed ^ (uint32_t)length;
        Py_ssize_t length4 = length / 4, i;
        for (i = 0; i < length4; i++) {
            Py_ssize_t i4 = i * 4;
            uint32_t k = (uint32_t)data[i4] | ((uint32_t)data[i4 + 1] << 8)
                       | ((uint32_t)data[i4 + 2] << 16) | ((uint32_t)data[i4 + 3] << 24);
            k *= m; k ^= k >> r; k *= m;
            h *= m; h ^= k;
        }
        switch (length % 4) {
        case 3: h ^= (uint32_t)data[(length & ~3) + 2] << 16; /* fall through */
        case 2: h ^= (uint32_t)data[(length & ~3) + 1] << 8;  /* fall through */
        case 1: h ^= (uint32_t)data[length & ~3]; h *= m;
        }
        h ^= h >> 13; h *= m; h ^= h >> 15;
        return h;
    }
    """
    uint32_t sl_murmur2(const unsigned char *data, Py_ssize_t length) nogil


def murmur2(data):
    """Kafka's murmur2 (seed 0x9747b28c) as a signed 32-bit int, as the Java client returns."""
    cdef _View v = _View(data)
    return <int32_t>sl_murmur2(v.p, v.n)


cpdef int partition_for_key(key, int partitions) except -1:
    """The partition Kafka's Java client picks: (murmur2(key) & 0x7fffffff) % partitions."""
    cdef uint32_t h
    cdef _View v
    if type(key) is bytes:
        h = sl_murmur2(<const unsigned char *>PyBytes_AS_STRING(key), len(<bytes>key))
    else:
        v = _View(key)
        h = sl_murmur2(v.p, v.n)
    return (h & 0x7fffffff) % partitions
