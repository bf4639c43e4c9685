# ------------------------------------------------------------ columnar appends
# Encoding a RecordBatch's numpy columns (Topic.append_batch) as one record
# batch of docs/format.md, with no Python object per record: one pass checks
# and sizes every record, a second copies the key and value bytes behind
# their record headers; the CRC is computed over the result. The reference
# twin is ``py_encode_columns`` in streamlog/backends/local/codec.py.

from streamlog.errors import RecordTooLarge as _RecordTooLarge

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
    cdef Py_ssize_t n, i, total = HDR, klen, vlen, p, vd_len, kd_len
    cdef const int64_t *ts
    cdef const int64_t *vo
    cdef const int64_t *ko
    cdef const char *vd
    cdef const char *kd
    cdef const char *vn
    cdef const char *kn
    cdef int64_t first_ts, max_ts, delta
    cdef char *out_p
    if not isinstance(timestamps_ms, cnp.ndarray):
        raise TypeError("RecordBatch column timestamps_ms must be a numpy array")
    n = len(timestamps_ms)
    if n == 0:
        raise ValueError("append_batch needs at least one record (the batch is empty)")
    ts = <const int64_t *>_column_ptr(timestamps_ms, "timestamps_ms", cnp.NPY_INT64, n)
    vo = <const int64_t *>_column_ptr(value_offsets, "value_offsets", cnp.NPY_INT64, n + 1)
    ko = <const int64_t *>_column_ptr(key_offsets, "key_offsets", cnp.NPY_INT64, n + 1)
    vn = _column_ptr(value_null, "value_null", cnp.NPY_BOOL, n)
    kn = _column_ptr(key_null, "key_null", cnp.NPY_BOOL, n)
    vd = _column_ptr(value_data, "value_data", cnp.NPY_UINT8, -1)
    kd = _column_ptr(key_data, "key_data", cnp.NPY_UINT8, -1)
    vd_len = len(value_data)
    kd_len = len(key_data)
    _check_bounds(vo, n, vd_len, "value")
    _check_bounds(ko, n, kd_len, "key")
    first_ts = ts[0]
    max_ts = first_ts
    # Pass 1: check every record and size the batch.
    for i in range(n):
        if ts[i] < 0:
            raise ValueError(f"RecordBatch record {i}: timestamp_ms must be >= 0, not {ts[i]}")
        delta = ts[i] - first_ts
        if delta < -2147483648 or delta > 2147483647:
            raise ValueError("timestamps of one batch must lie within 2**31 ms of each other")
        if ts[i] > max_ts:
            max_ts = ts[i]
        vlen = 0
        klen = 0
        if vn[i]:
            if not allow_null:
                raise ValueError(f"RecordBatch record {i} has a null value (a tombstone): "
                                 "allowed only on compacted topics")
        else:
            vlen = vo[i + 1] - vo[i]
        if kn[i]:
            if need_key:
                raise ValueError(f"RecordBatch record {i} has no key: the topic is compacted "
                                 "and every record needs a key")
        else:
            klen = ko[i + 1] - ko[i]
        if vlen + klen > max_record:
            raise _RecordTooLarge(f"record {i} of {vlen + klen} bytes (key + value) exceeds "
                                  f"max_record_bytes={max_record}")
        total += RHDR + vlen + klen
        if total > _MAX_BATCH_BYTES:
            raise ValueError("append_batch: the batch would exceed 4 GiB; split it")
    out = PyBytes_FromStringAndSize(NULL, total)
    out_p = PyBytes_AS_STRING(out)
    _put_header(out_p, total, <uint32_t>n, first_ts, max_ts)
    p = HDR
    # Pass 2: record headers, then the key and value bytes. The GIL stays held: the
    # offsets checked in pass 1 must not change under the copy (a caller's array).
    for i in range(n):
        klen = -1 if kn[i] else ko[i + 1] - ko[i]
        vlen = -1 if vn[i] else vo[i + 1] - vo[i]
        sl_store_u32le(out_p + p + R_OFF_DELTA, <uint32_t>(<int32_t>(ts[i] - first_ts)))
        sl_store_u32le(out_p + p + R_OFF_KLEN, <uint32_t>(<int32_t>klen))
        sl_store_u32le(out_p + p + R_OFF_VLEN, <uint32_t>(<int32_t>vlen))
        sl_store_u32le(out_p + p + R_OFF_HLEN, 0)
        p += RHDR
        if klen > 0:
            memcpy(out_p + p, kd + ko[i], klen)
            p += klen
        if vlen > 0:
            memcpy(out_p + p, vd + vo[i], vlen)
            p += vlen
    sl_store_u32le(out_p + OFF_CRC,
                   _crc(<const unsigned char *>out_p + OFF_MAGIC, total - OFF_MAGIC))
    return out, max_ts
