# cython: language_level=3
"""Compiled core of streamlog: the batch codec, records, mappings and the partition lock.

The codec half mirrors ``streamlog/_format.py`` (the readable reference of
docs/format.md) name for name and byte for byte; the native half (mappings,
the robust process-shared append lock, seqlock publication, futex waits) has
no Python equivalent. Importing this module only loads code.
"""

include "codec.pxi"
include "native.pxi"
include "eventlog.pxi"
include "columnar.pxi"
include "groups.pxi"
include "subjects.pxi"
