"""Stream and subject names: the token encoding is reversible, names never collide, and
every name is one the server accepts."""

from __future__ import annotations

import itertools
import re

import pytest

from streamlog.backends.jetstream import _naming as naming

ALPHABET = "a0_.-"


def _names(max_len: int) -> list[str]:
    """Every name over a small alphabet that holds each special character, starting with a
    letter or digit as store and topic names must."""
    out = []
    for n in range(1, max_len + 1):
        for chars in itertools.product(ALPHABET, repeat=n):
            if chars[0].isalnum():
                out.append("".join(chars))
    return out


def test_encoding_is_reversible_and_stream_safe():
    """decode(encode(x)) == x, and the encoding uses only [A-Za-z0-9_-]."""
    for name in _names(6):
        token = naming.encode_token(name)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
        assert naming.decode_token(token) == name


def test_stream_names_and_subjects_never_collide():
    """Distinct (store, topic, partition) give distinct stream names and subjects, even when
    separators and escapes could line up (store 'a_', topic 'b' vs store 'a', topic '_b')."""
    stores = [s for s in _names(4) if "." not in s]
    topics = _names(4)
    seen_streams: dict[str, tuple] = {}
    seen_subjects: dict[str, tuple] = {}
    for store, topic, p in itertools.product(stores, topics, (0, 1, 10)):
        key = (store, topic, p)
        assert seen_streams.setdefault(naming.stream_name(store, topic, p), key) == key
        assert seen_subjects.setdefault(naming.partition_subject(store, topic, p), key) == key


def test_examples():
    """The examples the documentation gives."""
    assert naming.stream_name("shop", "orders.eu", 3) == "SL_shop_orders_-eu_3"
    assert naming.partition_subject("shop", "orders.eu", 3) == "streamlog.shop.orders_-eu.3"
    assert naming.stream_subjects("shop", "orders.eu", 3) == [
        "streamlog.shop.orders_-eu.3", "streamlog.shop.orders_-eu.3.>"]
    assert naming.store_subjects("shop") == "streamlog.shop.>"
    assert naming.stream_metadata("shop", "orders.eu", 3) == {
        "streamlog.store": "shop", "streamlog.topic": "orders.eu", "streamlog.partition": "3"}


def test_long_names_are_hashed_within_the_limit():
    """The longest store and topic fit the 255-character stream name limit by hashing; two
    long topics that share a prefix still get different names."""
    store = "s" * 64
    t1, t2 = "a." * 99 + "x1", "a." * 99 + "x2"
    n1, n2 = naming.stream_name(store, t1, 4095), naming.stream_name(store, t2, 4095)
    assert n1 != n2 and n1.startswith("SLH_") and len(n1) <= naming.MAX_STREAM_NAME_LEN
    short = naming.stream_name(store, "orders", 0)
    assert short.startswith("SL_") and len(short) <= naming.MAX_STREAM_NAME_LEN


@pytest.mark.parametrize("store,topic,partition", [
    ("", "t", 0), ("-s", "t", 0), ("s.x", "t", 0), ("s" * 65, "t", 0),
    ("s", "", 0), ("s", ".t", 0), ("s", "t*", 0), ("s", "t>", 0), ("s", "t y", 0),
    ("s", "t", -1), ("s", "t", True), ("s", "t", "0"),
])
def test_invalid_parts_are_value_errors(store, topic, partition):
    """Names that could break a subject or a stream name are refused before use."""
    with pytest.raises(ValueError):
        naming.stream_name(store, topic, partition)


def test_decode_refuses_text_it_cannot_have_produced():
    """A lone '_' is not an encoding of anything."""
    with pytest.raises(ValueError):
        naming.decode_token("a_b")


def test_message_subjects_hang_below_the_partition():
    """A record's subject goes below ``<partition subject>.s.``; filters go below the same
    prefix; a header no NATS subject can carry stays on the partition's own subject."""
    base = naming.partition_subject("shop", "orders.eu", 3)
    assert naming.message_subject(base, b"orders.eu.created") == \
        "streamlog.shop.orders_-eu.3.s.orders.eu.created"
    assert naming.message_filter(base, "orders.*.created") == \
        "streamlog.shop.orders_-eu.3.s.orders.*.created"
    for bad in (b"", b"a..b", b"a b", b"a.*", b"a.>", b".a", b"\xff"):
        assert naming.message_subject(base, bad) == base
    # the partition token stays the fourth, whatever the record's subject
    assert naming.message_subject(base, b"x.y.z").split(".")[3] == "3"
