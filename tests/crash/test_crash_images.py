"""Crash images: what a machine crash can leave on disk, hundreds of times per mode.

A killed process leaves the page cache whole; a crashed machine does not. This
harness keeps, at the last completed sync, a copy of what was durable (D),
then appends more without syncing (C), and builds images of what the disk can
hold after a crash between the two:

* every page that differs between D and C dropped (D's bytes), written back
  (C's bytes), or zeroed (a page allocated but never written), in random
  subsets: pages written back out of order;
* the newest segment cut at every byte of the last batches (a file shorter
  than its data);
* the control file from before the last sync, from after it, or lost.

Each image is opened as after a reboot (the control block carries another
boot's id). For every image: the store opens; every record acknowledged before
the last completed sync is there, intact and in order; any record after those
is one that was really appended at that offset (nothing else is returned as
data); appends continue densely; ``verify`` finds no corruption.

The mode decides how D was made durable: ``always`` syncs every append,
``interval`` and ``never`` by ``flush()``. The unsynced appends after D run
with ``durability="never"`` in every mode, so that D is exactly what is
durable (a background sync in ``interval`` mode would make more of C durable
than the harness knows).
"""

from __future__ import annotations

import os
import random
import shutil

import pytest

import streamlog

PAGE = 4096
IMAGES_PER_MODE = 240
SEGMENT_BYTES = 1 << 20


def _partition_dir(store: str) -> str:
    return os.path.join(store, "topics", "t", "0")


def _read_files(store: str) -> dict[str, bytes]:
    d = _partition_dir(store)
    out = {}
    for name in os.listdir(d):
        with open(os.path.join(d, name), "rb") as f:
            out[name] = f.read()
    return out


def _values(rng: random.Random, n: int, tag: bytes) -> list[bytes]:
    out = []
    for i in range(n):
        size = rng.choice([8, 40, 300, 1500, 5000]) + rng.randrange(8)
        body = (tag + b"-%d-" % i) * (size // 8 + 1)
        # some records end in zero bytes, so batches do too: the data's end is not
        # its last non-zero byte
        out.append(body[:size - 4] + bytes(4) if i % 3 == 0 else body[:size])
    return out


def _append(t, values: list[bytes], rng: random.Random) -> None:
    i = 0
    while i < len(values):
        k = rng.choice([1, 1, 1, 3, 7])
        chunk = values[i:i + k]
        if len(chunk) == 1:
            t.append(chunk[0])
        else:
            t.append_many(chunk)
        i += len(chunk)


class History:
    """D (durable), C (after unsynced appends) and what was acknowledged."""

    def __init__(self, tmp: str, mode: str, seed: int) -> None:
        rng = random.Random(seed)
        self.store = os.path.join(tmp, "origin")
        self.durable = _values(rng, 120, b"d")
        self.durable[-1] = b"the last synced record ends in zeros" + bytes(8)
        # small last records: the harness cuts the file at every byte of the last batches
        self.unsynced = _values(rng, 40, b"u") + [b"tail-%d\0\0" % i * 6 for i in range(3)]
        with streamlog.open(self.store, durability=mode) as log:
            t = log.topic("t", segment_bytes=SEGMENT_BYTES)
            _append(t, self.durable[:60], rng)
            t.flush()
            self.control_before = _read_files(self.store)["control"]
            _append(t, self.durable[60:], rng)
            if mode != "always":
                t.flush()
            self.d_files = _read_files(self.store)
            self.d_end = log.stats()["topics"]["t"]["partitions"][0]["bytes"]
        with streamlog.open(self.store, durability="never") as log:
            t = log.topic("t")
            _append(t, self.unsynced[:-3], rng)
            for v in self.unsynced[-3:]:
                t.append(v)
            self.c_files = _read_files(self.store)
            self.c_end = log.stats()["topics"]["t"]["partitions"][0]["bytes"]
        self.segment = next(n for n in self.c_files if n.endswith(".log"))
        assert self.segment in self.d_files, "the unsynced appends stayed in one segment"
        self.batch_starts = _batch_starts(self.c_files[self.segment], self.c_end)

    def image(self, path: str, rng: random.Random, cut: int | None) -> str:
        """Write one crash image to ``path``; returns a description for failures."""
        shutil.copytree(self.store, path, ignore=shutil.ignore_patterns("0"))
        pdir = _partition_dir(path)
        os.makedirs(pdir)
        d_log, c_log = self.d_files[self.segment], self.c_files[self.segment]
        seg = bytearray(d_log)
        choices = []
        for page in range(0, len(c_log), PAGE):
            a, b = d_log[page:page + PAGE], c_log[page:page + PAGE]
            if a == b:
                continue
            options = ["dropped", "written"]
            if page >= self.d_end:  # wholly past the durable data: may read as zeros
                options.append("zeroed")
            choice = rng.choice(options)
            choices.append(choice[0])
            if choice == "written":
                seg[page:page + PAGE] = b
            elif choice == "zeroed":
                seg[page:page + PAGE] = bytes(len(b))
        if cut is not None:
            seg = bytearray(c_log[:cut])
        control = rng.choice(["before", "durable", "after", "lost"])
        files = dict(self.c_files)
        files[self.segment] = bytes(seg)
        files["control"] = {"before": self.control_before, "durable": self.d_files["control"],
                            "after": self.c_files["control"], "lost": None}[control]
        for name, data in files.items():
            if data is None:
                continue
            if name == "control":  # as a reboot leaves it: another boot's id
                data = data[:16] + b"\x5a" * 16 + data[32:]
            with open(os.path.join(pdir, name), "wb") as f:
                f.write(data)
        pages = "".join(choices)
        return f"cut={cut} control={control} pages={pages}"


def _batch_starts(data: bytes, end: int) -> list[int]:
    starts, pos = [], 0
    while pos < end:
        starts.append(pos)
        pos += int.from_bytes(data[pos + 8:pos + 12], "little")
    return starts


def _check_image(path: str, history: History, what: str) -> int:
    appended = history.durable + history.unsynced
    with streamlog.open(path) as log:
        t = log.topic("t")
        records = list(t.read(0))
        offsets = [r.offset for r in records]
        assert offsets == list(range(len(records))), f"{what}: offsets not dense"
        assert len(records) >= len(history.durable), \
            f"{what}: {len(records)} records, {len(history.durable)} were synced"
        for r in records:
            assert r.value == appended[r.offset], f"{what}: offset {r.offset} is not what was " \
                                                  "appended there"
        assert t.end_offset(0) == len(records), what
        pos = t.append(b"after the crash")
        assert pos.offset == len(records), f"{what}: appends do not continue densely"
        assert t.get(0, pos.offset).value == b"after the crash"
        problems = log.verify()
        assert [p for p in problems if p.kind == "corrupt"] == [], f"{what}: {problems}"
    return len(records)


@pytest.mark.parametrize("mode", ["always", "interval", "never"])
def test_crash_images(tmp_path, mode):
    seed = {"always": 11, "interval": 22, "never": 33}[mode]
    history = History(str(tmp_path), mode, seed)
    rng = random.Random(seed)
    # every byte of the last two batches, then random cuts and page subsets
    last_two = history.batch_starts[-2]
    cuts: list[int | None] = list(range(last_two, history.c_end + 1))
    cuts += [rng.randrange(history.d_end, history.c_end + 1) for _ in range(40)]
    cuts += [history.d_end] * 4  # every unsynced byte lost: the file ends at the sync point
    cuts += [None] * max(0, IMAGES_PER_MODE - len(cuts))
    kept = set()
    for i, cut in enumerate(cuts):
        path = str(tmp_path / f"image-{i}")
        what = history.image(path, rng, cut)
        kept.add(_check_image(path, history, f"image {i} ({mode}, {what})"))
        shutil.rmtree(path)
    assert len(cuts) >= IMAGES_PER_MODE
    # the images really differ in what survived: some kept unsynced records, some
    # kept fewer (each image already kept every synced record)
    assert max(kept) > min(kept) and max(kept) > len(history.durable), kept
