# ------------------------------------------------------------ columnar appends
# Encoding a RecordBatch's numpy columns (Topic.append_batch) as one record
# batch of docs/format.md, with no Python object per record: one pass checks
# and sizes every record, a second copies the key and value bytes behind
# their record headers; the CRC is computed over the result. The reference
# twin is ``py_encode_columns`` in streamlog/backends/local/codec.py.

from streamlog.errors import RecordTooLarge as _RecordTooLarge
from cpython.pyport cimport PY_SSIZE_T_MAX

DEF _MAX_BATCH_BYTES = 0xFFFFFFFF  # batch_length is a u32
_COLUMN_DTYPES = {cnp.NPY_INT64: "int64", cnp.NPY_UINT8: "uint8", cnp.NPY_BOOL: "bool"}


cdef const char *_column_ptr(object arr, str name, int typenum, Py_ssize_t n) except NULL:
    """The data of a 1-D C-contiguous numpy column of ``n`` items of ``typenum``."""
    cdef cnp.ndarray a
    if not isinstance(arr, cnp.ndarray):
        raise TypeError(f"RecordBatch column {name} must be a numpy array, "
                        f"not {type(arr).__name__}")
    a = <cnp.ndarray>arr
    if cnp.PyArray_NDIM(a) != 1 or cnp.PyArray_TYPE(a) != typenum \
            or not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise TypeError(f"RecordBatch column {name} must be a 1-D contiguous array of "
                        f"{_COLUMN_DTYPES[typenum]}, not {arr.dtype} of shape {arr.shape}")
    if n >= 0 and cnp.PyArray_DIMS(a)[0] != n:
        raise ValueError(f"RecordBatch column {name} has {cnp.PyArray_DIMS(a)[0]} entries, "
                         f"expected {n}")
    if cnp.PyArray_DIMS(a)[0] == 0:
        return &_empty_byte
    return <const char *>cnp.PyArray_DATA(a)


cdef int _check_bounds(const int64_t *offs, Py_ssize_t n, Py_ssize_t data_len,
                       str name) except -1:
    """offs[0..n] must be non-decreasing and within [0, data_len]."""
    cdef Py_ssize_t i
    if offs[0] < 0 or offs[n] > data_len:
        raise ValueError(f"RecordBatch {name} offsets run outside their data "
                         f"({offs[0]}..{offs[n]} of {data_len} bytes)")
    for i in range(n):
        if offs[i + 1] < offs[i]:
            raise ValueError(f"RecordBatch {name} offsets decrease at record {i}")
    return 0


cdef struct _Cols:
    Py_ssize_t n
    const int64_t *ts
    const int64_t *vo
    const int64_t *ko
    const char *vd
    const char *kd
    const char *vn
    const char *kn


cdef Py_ssize_t _size_columns(_Cols *c, object timestamps_ms, object value_offsets,
                              object value_data, object value_null, object key_offsets,
                              object key_data, object key_null, Py_ssize_t max_record,
                              bint allow_null, bint need_key, int64_t *max_ts_out,
                              Py_ssize_t *largest_out=NULL, int *nulls_out=NULL) except -1:
    """Pass 1: take the columns' pointers into ``c``, check every record, and return the
    encoded batch's size (its largest timestamp in ``max_ts_out``; optionally the largest
    key + value in ``largest_out`` and in ``nulls_out`` bit 0: a null value, bit 1: a
    record without a key)."""
    cdef Py_ssize_t n, i, total = HDR, klen, vlen, largest = 0
    cdef int nulls = 0
    cdef int64_t first_ts, max_ts, delta
    if not isinstance(timestamps_ms, cnp.ndarray):
        raise TypeError("RecordBatch column timestamps_ms must be a numpy array")
    n = len(timestamps_ms)
    if n == 0:
        raise ValueError("append_batch needs at least one record (the batch is empty)")
    c.n = n
    c.ts = <const int64_t *>_column_ptr(timestamps_ms, "timestamps_ms", cnp.NPY_INT64, n)
    c.vo = <const int64_t *>_column_ptr(value_offsets, "value_offsets", cnp.NPY_INT64, n + 1)
    c.ko = <const int64_t *>_column_ptr(key_offsets, "key_offsets", cnp.NPY_INT64, n + 1)
    c.vn = _column_ptr(value_null, "value_null", cnp.NPY_BOOL, n)
    c.kn = _column_ptr(key_null, "key_null", cnp.NPY_BOOL, n)
    c.vd = _column_ptr(value_data, "value_data", cnp.NPY_UINT8, -1)
    c.kd = _column_ptr(key_data, "key_data", cnp.NPY_UINT8, -1)
    _check_bounds(c.vo, n, len(value_data), "value")
    _check_bounds(c.ko, n, len(key_data), "key")
    first_ts = c.ts[0]
    max_ts = first_ts
    for i in range(n):
        if c.ts[i] < 0:
            raise ValueError(f"RecordBatch record {i}: timestamp_ms must be >= 0, not {c.ts[i]}")
        delta = c.ts[i] - first_ts
        if delta < -2147483648 or delta > 2147483647:
            raise ValueError("timestamps of one batch must lie within 2**31 ms of each other")
        if c.ts[i] > max_ts:
            max_ts = c.ts[i]
        vlen = 0
        klen = 0
        if c.vn[i]:
            nulls |= 1
            if not allow_null:
                raise ValueError(f"RecordBatch record {i} has a null value (a tombstone): "
                                 "allowed only on compacted topics")
        else:
            vlen = c.vo[i + 1] - c.vo[i]
        if c.kn[i]:
            nulls |= 2
            if need_key:
                raise ValueError(f"RecordBatch record {i} has no key: the topic is compacted "
                                 "and every record needs a key")
        else:
            klen = c.ko[i + 1] - c.ko[i]
        if vlen + klen > max_record:
            raise _RecordTooLarge(f"record {i} of {vlen + klen} bytes (key + value) exceeds "
                                  f"max_record_bytes={max_record}")
        if vlen + klen > largest:
            largest = vlen + klen
        total += RHDR + vlen + klen
        if total > _MAX_BATCH_BYTES:
            raise ValueError("append_batch: the batch would exceed 4 GiB; split it")
    max_ts_out[0] = max_ts
    if largest_out != NULL:
        largest_out[0] = largest
    if nulls_out != NULL:
        nulls_out[0] = nulls
    return total


cdef int _fill_columns(const _Cols *c, char *out_p, Py_ssize_t total,
                       int64_t max_ts) except -1:
    """Pass 2: the batch (base offset 0) into ``out_p``: header, record headers with the
    key and value bytes, then the CRC over what was written."""
    cdef Py_ssize_t i, p = HDR, klen, vlen
    cdef int64_t first_ts = c.ts[0]
    _put_header(out_p, total, <uint32_t>c.n, first_ts, max_ts)
    for i in range(c.n):
        klen = -1 if c.kn[i] else c.ko[i + 1] - c.ko[i]
        vlen = -1 if c.vn[i] else c.vo[i + 1] - c.vo[i]
        sl_store_u32le(out_p + p + R_OFF_DELTA, <uint32_t>(<int32_t>(c.ts[i] - first_ts)))
        sl_store_u32le(out_p + p + R_OFF_KLEN, <uint32_t>(<int32_t>klen))
        sl_store_u32le(out_p + p + R_OFF_VLEN, <uint32_t>(<int32_t>vlen))
        sl_store_u32le(out_p + p + R_OFF_HLEN, 0)
        p += RHDR
        if klen > 0:
            memcpy(out_p + p, c.kd + c.ko[i], klen)
            p += klen
        if vlen > 0:
            memcpy(out_p + p, c.vd + c.vo[i], vlen)
            p += vlen
    sl_store_u32le(out_p + OFF_CRC, _crc(<const unsigned char *>out_p + OFF_MAGIC,
                                        total - OFF_MAGIC))
    return 0


def encode_columns(timestamps_ms, value_offsets, value_data, value_null, key_offsets,
                   key_data, key_null, Py_ssize_t max_record, bint allow_null, bint need_key):
    """Encode columns (as RecordBatch holds them) as one batch with base_offset 0.

    Returns ``(batch_bytes, max_timestamp_ms)``. Raises before anything is
    produced: TypeError for a column of the wrong type or shape; ValueError
    for no records, offsets outside their data or decreasing, a negative
    timestamp, timestamps more than 2**31-1 ms apart, a null value where
    ``allow_null`` is false, a null key where ``need_key`` is true, or a batch
    over 4 GiB; RecordTooLarge for a key + value above ``max_record`` bytes.
    Records carry no headers (a RecordBatch has none). The bytes of an entry
    marked null are ignored.
    """
    cdef _Cols c
    cdef int64_t max_ts
    cdef Py_ssize_t total = _size_columns(&c, timestamps_ms, value_offsets, value_data,
                                          value_null, key_offsets, key_data, key_null,
                                          max_record, allow_null, need_key, &max_ts)
    out = PyBytes_FromStringAndSize(NULL, total)
    # The GIL stays held from pass 1 to here: the checked offsets must not change.
    _fill_columns(&c, PyBytes_AS_STRING(out), total, max_ts)
    return out, max_ts


def encode_image(timestamps_ms, value_offsets, value_data, value_null, key_offsets, key_data,
                 key_null):
    """The on-disk image of a batch built from columns, before any topic is known:
    ``(batch_bytes, max_timestamp_ms, largest_record_bytes, has_null_value,
    has_null_key)``. The checks that depend on a topic (``max_record_bytes``, null
    values, keys required) are left to the append, which reads them off this summary.
    Raises as ``encode_columns`` for anything else."""
    cdef _Cols c
    cdef int64_t max_ts
    cdef Py_ssize_t largest
    cdef int nulls
    cdef Py_ssize_t total = _size_columns(&c, timestamps_ms, value_offsets, value_data,
                                          value_null, key_offsets, key_data, key_null,
                                          PY_SSIZE_T_MAX, True, False, &max_ts, &largest,
                                          &nulls)
    out = PyBytes_FromStringAndSize(NULL, total)
    _fill_columns(&c, PyBytes_AS_STRING(out), total, max_ts)
    return out, max_ts, largest, bool(nulls & 1), bool(nulls & 2)


# ------------------------------------------------------------- early writeback
cdef extern from "<fcntl.h>" nogil:
    int sync_file_range(int fd, int64_t offset, int64_t nbytes, unsigned int flags)
    unsigned int SYNC_FILE_RANGE_WRITE


def writeback(int fd, int64_t start, int64_t end):
    """Start writing bytes [start, end) of ``fd`` back to disk, without waiting for it
    (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, GIL released). Returns 0 or the errno:
    a hint that makes a later fsync of the range cheap, never a durability promise."""
    cdef int rc = 0
    if end <= start:
        return 0
    with nogil:
        if sync_file_range(fd, start, end - start, SYNC_FILE_RANGE_WRITE) != 0:
            rc = errno
    return rc


def bytes_column(items):
    """(offsets, data, null) columns of a list or tuple whose items are all ``bytes`` or
    None, in one pass without a numpy scalar store per item; None if any item is of
    another type (the caller's general path then converts and reports it).

    ``offsets`` int64 (N+1 boundaries), ``data`` uint8, ``null`` bool, each owning
    its memory (``RecordBatch.from_arrays`` keeps them without another copy)."""
    cdef Py_ssize_t n, i, total = 0, pos = 0, ln
    cdef object item
    cdef cnp.ndarray offs, data, null
    cdef int64_t *op
    cdef char *dp
    cdef char *np_
    if type(items) is list:
        items = tuple(items)  # (a list may change under a Python callback; a tuple cannot)
    elif type(items) is not tuple:
        return None
    n = len(<tuple>items)
    for i in range(n):
        item = (<tuple>items)[i]
        if item is None:
            continue
        if type(item) is not bytes:
            return None
        total += len(<bytes>item)
    offs = np.empty(n + 1, np.int64)
    null = np.zeros(n, np.bool_)
    data = np.empty(total, np.uint8)
    op = <int64_t *>cnp.PyArray_DATA(offs)
    dp = <char *>cnp.PyArray_DATA(data)
    np_ = <char *>cnp.PyArray_DATA(null)
    op[0] = 0
    for i in range(n):
        item = (<tuple>items)[i]
        if item is None:
            np_[i] = 1
        else:
            ln = len(<bytes>item)
            memcpy(dp + pos, PyBytes_AS_STRING(item), ln)
            pos += ln
        op[i + 1] = pos
    return offs, data, null
