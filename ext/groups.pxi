# Hot loop of consumer-group polls (streamlog/backends/local/groups.py): one Message per
# leased record, its fields stored straight into the instance's slots.

cdef extern from *:
    """
    #include <structmember.h>
    /* The offset of a writable object slot of a class with __slots__ (its member
       descriptor says where the instance keeps it); -1 with TypeError otherwise. */
    static Py_ssize_t sl_slot_offset(PyObject *cls, PyObject *name) {
        PyObject *d = PyObject_GetAttr(cls, name);
        Py_ssize_t off = -1;
        if (d == NULL) return -1;
        if (Py_TYPE(d) == &PyMemberDescr_Type) {
            PyMemberDef *def = ((PyMemberDescrObject *)d)->d_member;
            if (def->type == T_OBJECT_EX && !(def->flags & READONLY)) off = def->offset;
        }
        Py_DECREF(d);
        if (off < 0) PyErr_SetString(PyExc_TypeError, "not a writable object slot");
        return off;
    }
    /* An instance of cls with every slot empty (what object.__new__(cls) makes). */
    static PyObject *sl_new_instance(PyObject *cls) {
        PyTypeObject *t = (PyTypeObject *)cls;
        return t->tp_alloc(t, 0);
    }
    /* The object in a slot (borrowed; NULL when the slot is empty). */
    static inline PyObject *sl_slot_get(PyObject *o, Py_ssize_t off) {
        return *(PyObject **)((char *)o + off);
    }
    /* Out of the cyclic GC's sight (see MessageMaker.build's ``track``). */
    static inline void sl_untrack(PyObject *o) {
        if (PyObject_GC_IsTracked(o)) PyObject_GC_UnTrack(o);
    }
    static inline void sl_slot_set(PyObject *o, Py_ssize_t off, PyObject *v) {
        PyObject **p = (PyObject **)((char *)o + off);
        PyObject *old = *p;
        Py_INCREF(v);
        *p = v;
        Py_XDECREF(old);
    }
    """
    Py_ssize_t sl_slot_offset(object cls, object name) except -1
    object sl_new_instance(object cls)
    void sl_slot_set(object o, Py_ssize_t off, object v)
    void sl_untrack(object o)
    void *sl_slot_get(object o, Py_ssize_t off)


cdef class MessageMaker:
    """Builds group Messages (``groups.Message``, a class with __slots__) for leased
    records: one allocation and six slot stores per record, no Python-level attribute
    assignment. Made once per process for the Message class."""

    cdef object cls
    cdef Py_ssize_t o_record, o_count, o_group, o_epoch, o_state, o_due

    def __cinit__(self, cls):
        if not isinstance(cls, type):
            raise TypeError("MessageMaker needs a class with __slots__")
        self.cls = cls
        self.o_record = sl_slot_offset(cls, "_record")
        self.o_count = sl_slot_offset(cls, "delivery_count")
        self.o_group = sl_slot_offset(cls, "_group")
        self.o_epoch = sl_slot_offset(cls, "_epoch")
        self.o_state = sl_slot_offset(cls, "_state")
        self.o_due = sl_slot_offset(cls, "_due")

    def build(self, list records, list out, group, count, epoch, state, due,
              bint track=True):
        """Append to ``out`` one Message per record of ``records``, each with these
        field values. Returns whether any record carries headers (the caller then
        looks at those for delays and subjects).

        ``track=False`` keeps the Messages out of the cyclic GC: a poll of 1,000
        records would otherwise set off a collection that walks every young
        object once or twice per poll (17 % of a poll-and-ack loop's samples).
        Only for a group that never keeps its Messages itself (no prefetch, no
        batched acks): then no cycle can run through one (its slots hold a
        Record, ints and the Group, which refers back to none of them)."""
        cdef bint headers = False
        cdef Record rec
        for obj in records:
            m = sl_new_instance(self.cls)
            if not track:
                sl_untrack(m)
            sl_slot_set(m, self.o_record, obj)
            sl_slot_set(m, self.o_count, count)
            sl_slot_set(m, self.o_group, group)
            sl_slot_set(m, self.o_epoch, epoch)
            sl_slot_set(m, self.o_state, state)
            sl_slot_set(m, self.o_due, due)
            out.append(m)
            if not headers:
                if type(obj) is Record:
                    rec = <Record>obj
                    headers = bool(rec._headers)
                else:
                    headers = bool(obj.headers)
        return headers

    def scan(self, list msgs, group, bint exclusive, state=0):
        """The usual settle of a poll's batch, recognised in one pass: every item a
        Message of ``group`` in ``state`` (0: unsettled), all of one partition (and one epoch
        if ``exclusive``), offsets consecutive and increasing. Returns
        ``(partition, epoch, lo, hi)`` or None (the caller then takes the careful
        path, which also names what is wrong)."""
        cdef Py_ssize_t n = len(msgs), i
        cdef Record rec
        cdef int partition = 0
        cdef int64_t lo = 0, prev = 0
        cdef object epoch = 0
        cdef void *s
        cdef void *r
        cdef void *ep
        if n == 0:
            return None
        for i in range(n):
            m = msgs[i]
            if type(m) is not self.cls:
                return None
            if sl_slot_get(m, self.o_group) is not <void *>group:
                return None
            s = sl_slot_get(m, self.o_state)
            if s == NULL or <object>s is not state and <object>s != state:
                return None
            r = sl_slot_get(m, self.o_record)
            if r == NULL or type(<object>r) is not Record:
                return None
            rec = <Record>r
            if i == 0:
                partition = rec.partition
                lo = prev = rec.offset
                if exclusive:
                    ep = sl_slot_get(m, self.o_epoch)
                    if ep == NULL:
                        return None
                    epoch = <object>ep
            else:
                if rec.partition != partition or rec.offset != prev + 1:
                    return None
                prev = rec.offset
                if exclusive:
                    ep = sl_slot_get(m, self.o_epoch)
                    if ep == NULL or <object>ep != epoch:
                        return None
        return partition, (epoch if exclusive else 0), lo, prev + 1

    def set_state(self, list msgs, state):
        """Store ``state`` into every Message of ``msgs`` (all of this class)."""
        for m in msgs:
            sl_slot_set(m, self.o_state, state)
