# Hot loops of the local event log (streamlog/backends/local/eventlog.py), kept beside the Record they walk.

cdef extern from *:
    """
    static PyObject *sl_event(PyObject *type, PyObject *sid, Py_ssize_t version,
                              int64_t position, int64_t ts, PyObject *value,
                              PyObject *headers) {
        /* an instance of the 6-field Event NamedTuple, as tuple.__new__ makes it */
        PyTypeObject *t = (PyTypeObject *)type;
        PyObject *o = t->tp_alloc(t, 6), *v, *p, *s;
        if (o == NULL) return NULL;
        v = PyLong_FromSsize_t(version);
        p = PyLong_FromLongLong(position);
        s = PyLong_FromLongLong(ts);
        if (v == NULL || p == NULL || s == NULL) {
            Py_XDECREF(v); Py_XDECREF(p); Py_XDECREF(s); Py_DECREF(o);
            return NULL;
        }
        Py_INCREF(sid); Py_INCREF(value); Py_INCREF(headers);
        PyTuple_SET_ITEM(o, 0, sid);
        PyTuple_SET_ITEM(o, 1, v);
        PyTuple_SET_ITEM(o, 2, p);
        PyTuple_SET_ITEM(o, 3, s);
        PyTuple_SET_ITEM(o, 4, value);
        PyTuple_SET_ITEM(o, 5, headers);
        return o;
    }
    """
    object sl_event(object type, object sid, Py_ssize_t version, int64_t position,
                    int64_t ts, object value, object headers)


def event_run(records, list positions, Py_ssize_t i, Py_ssize_t j, bint contiguous,
              bytes sid_b, event_sid, Py_ssize_t version, list out, event_type,
              str stream_header, str version_header):
    """The event store's read loop over one run of records (EventStore._records_at).

    ``records`` holds ``positions[i..j]`` (and, unless ``contiguous``, other
    records between them, skipped). Each taken record must carry the stream
    header ``sid_b``; its ``es-*`` headers are removed and it is appended to
    ``out`` as it is, or, with ``event_sid``, as an ``event_type`` (Event)
    numbered from ``version``. Returns ``(i, version, first, last)``: the next
    index, the next version and the version headers of the first and last
    record taken; None when a record is not of the stream.
    """
    cdef Record rec
    cdef dict h
    cdef int64_t want = positions[i], offset, ts
    first = last = None
    for obj in records:
        if type(obj) is Record:  # this store's records: no attribute lookups
            rec = <Record>obj
            offset = rec.offset
            if not contiguous and offset != want:
                continue
            h = rec._headers_dict()
            ts = rec.timestamp_ms
            value = rec.value
        else:  # another backend's records (backend.py): anything with these fields
            offset = obj.offset
            if not contiguous and offset != want:
                continue
            h = obj.headers
            ts = obj.timestamp_ms
            value = obj.value
        if h.pop(stream_header, None) != sid_b:
            return None
        last = h.pop(version_header, None)
        if first is None:
            first = last
        if event_sid is None:
            out.append(obj)
        else:
            out.append(sl_event(event_type, event_sid, version, want, ts, value, h))
        version += 1
        i += 1
        if i > j:
            break
        want = positions[i] if not contiguous else want + 1
    return i, version, first, last
