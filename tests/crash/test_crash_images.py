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


def _check_image(path: str, history, what: str, synced: int | None = None) -> int:
    """Open an image as after a reboot and check it; ``synced`` records (default: the
    history's durable ones) were acknowledged before the last completed sync."""
    appended = history.durable + history.unsynced
    synced = len(history.durable) if synced is None else synced
    with streamlog.open(path) as log:
        t = log.topic("t")
        records = list(t.read(0))
        offsets = [r.offset for r in records]
        assert offsets == list(range(len(records))), f"{what}: offsets not dense"
        assert len(records) >= synced, f"{what}: {len(records)} records, {synced} were synced"
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


# ------------------------------------------------------------ images spanning a roll
#
# In ``never`` and ``interval`` a roll publishes the new segment without waiting for
# the closed segment's fdatasync or the directory's fsync: a background thread runs
# them (``Partition._sync_closed``), and only then does the recovery point pass the
# closed segment. The unsynced appends below cross rolls with that background sync
# held back, so the harness knows exactly what was durable: D, and after the held-back
# syncs have run (E), D plus every closed segment and the newest segment's name.

ROLL_SEGMENT_BYTES = 32 * 1024


def _durable_end(name: str, data: bytes) -> int:
    """Bytes of ``data`` that hold something: batches for a segment, else up to the last
    non-zero byte. A page wholly past them may read as zeros after a crash."""
    if name.endswith(".log"):
        pos = 0
        while pos + 12 <= len(data):
            length = int.from_bytes(data[pos + 8:pos + 12], "little")
            if length == 0:
                break
            pos += length
        return pos
    return len(data.rstrip(b"\0"))


class RollHistory:
    """D (durable), C (unsynced appends across rolls, their closed segments not yet
    synced), E (the control file once the held-back syncs of the closed segments ran)."""

    def __init__(self, tmp: str, mode: str, seed: int, monkeypatch) -> None:
        from streamlog.backends.local.storage import prefault

        rng = random.Random(seed)
        self.store = os.path.join(tmp, "origin")
        self.durable = _values(rng, 50, b"d")
        self.unsynced = _values(rng, 45, b"u") + [b"tail-%d\0\0" % i * 6 for i in range(3)]
        with streamlog.open(self.store, durability=mode) as log:
            t = log.topic("t", segment_bytes=ROLL_SEGMENT_BYTES)
            _append(t, self.durable[:25], rng)
            t.flush()
            self.control_before = _read_files(self.store)["control"]
            _append(t, self.durable[25:], rng)
            t.flush()  # (in always, every append was synced already)
            self.d_files = _read_files(self.store)
        held: list = []
        with monkeypatch.context() as mp:
            mp.setattr(prefault, "request_sync", held.append)
            with streamlog.open(self.store, durability="never") as log:
                t = log.topic("t")
                _append(t, self.unsynced[:-3], rng)
                for v in self.unsynced[-3:]:
                    t.append(v)
                self.c_files = _read_files(self.store)
                assert held, "the unsynced appends rolled a segment"
                for job in held:  # the background trims and syncs, late
                    job()
                self.e_files = _read_files(self.store)  # the closed segments trimmed
                self.e_control = self.e_files["control"]
                self.newest = t.end_offset(0) and log._parts[("t", 0)].ctl.view()[1]
        self.logs = sorted(n for n in self.c_files if n.endswith(".log"))
        self.new_logs = [n for n in self.logs if n not in self.d_files]
        assert len(self.logs) >= 3 and self.new_logs, self.logs
        assert self.e_control != self.c_files["control"]

    def image(self, path: str, rng: random.Random, after_sync: bool) -> str:
        """Write one crash image; ``after_sync``: the held-back syncs had completed (the
        control file from E, every closed segment and the newest name durable)."""
        shutil.copytree(self.store, path, ignore=shutil.ignore_patterns("0"))
        pdir = _partition_dir(path)
        os.makedirs(pdir)
        newest = self.logs[-1][:20]
        out: dict[str, bytes | None] = {}
        notes = []
        fate = {}  # per new segment base: missing, empty or present
        # how much of what was not synced the kernel had written back, page by page
        written = rng.choice([0.1, 0.5, 0.9, 1.0])
        for name in self.logs:
            if name in self.new_logs:
                options = ["empty", "present"] if after_sync and name[:20] == newest else \
                    ["missing", "empty", "present"]
                fate[name[:20]] = rng.choice(options)
        for name, c in self.c_files.items():
            if name == "control":
                continue
            base = name[:20]
            durable_whole = after_sync and name.endswith(".log") and base != newest
            if durable_whole:
                out[name] = c
                continue
            d = self.d_files.get(name)
            if d is None:
                if fate.get(base) == "missing":
                    notes.append(f"{name}:missing")
                    continue
                if fate.get(base) == "empty":
                    out[name] = b""
                    notes.append(f"{name}:empty")
                    continue
                d = bytes(len(c))  # a new file: what never reached the disk reads as zeros
            # a trim (or growth) that was or was not kept
            size = rng.choice([len(d), len(c), len(self.e_files.get(name, c))])
            d_end = _durable_end(name, d)
            img = bytearray(d[:size].ljust(size, b"\0"))
            picks = []
            for page in range(0, size, PAGE):
                a, b = img[page:page + PAGE], c[page:page + PAGE].ljust(len(img[page:page + PAGE]),
                                                                        b"\0")
                if a == b:
                    continue
                if rng.random() < written:
                    choice = "written"
                else:
                    choice = rng.choice(["dropped"] + (["zeroed"] if page >= d_end else []))
                picks.append(choice[0])
                if choice == "written":
                    img[page:page + PAGE] = b
                elif choice == "zeroed":
                    img[page:page + PAGE] = bytes(len(b))
            out[name] = bytes(img)
            if picks and name.endswith(".log"):
                notes.append(f"{name[14:20]}:{size}:{''.join(picks)}")
        if after_sync:
            control = "after-sync"
            out["control"] = self.e_control
        else:
            control = rng.choice(["before", "durable", "after", "lost"])
            out["control"] = {"before": self.control_before, "durable": self.d_files["control"],
                              "after": self.c_files["control"], "lost": None}[control]
        for name, data in out.items():
            if data is None:
                continue
            if name == "control":  # as a reboot leaves it: another boot's id
                data = data[:16] + b"\x5a" * 16 + data[32:]
            with open(os.path.join(pdir, name), "wb") as f:
                f.write(data)
        return f"control={control} " + " ".join(notes)


ROLL_IMAGES_PER_MODE = 160


@pytest.mark.parametrize("mode", ["always", "interval", "never"])
def test_crash_images_across_a_roll(tmp_path, mode, monkeypatch):
    """Images of a crash after unsynced appends that rolled segments whose background
    sync had not completed (or had): closed segments past the recovery point with pages
    dropped, zeroed or partly written back, trims lost, the newest segment's file or
    name missing, the control file from before or after the background sync, or lost.
    Every record acknowledged before the last completed sync is there, intact and in
    order; nothing else is returned as data; appends continue densely; no corruption."""
    seed = {"always": 44, "interval": 55, "never": 66}[mode]
    history = RollHistory(str(tmp_path), mode, seed, monkeypatch)
    rng = random.Random(seed)
    kept_before, kept_after = set(), set()
    for i in range(ROLL_IMAGES_PER_MODE):
        after_sync = i % 4 == 3
        path = str(tmp_path / f"image-{i}")
        what = history.image(path, rng, after_sync)
        synced = history.newest if after_sync else len(history.durable)
        kept = _check_image(path, history, f"image {i} ({mode}, {what})", synced)
        (kept_after if after_sync else kept_before).add(kept)
        shutil.rmtree(path)
    # Some images were cut inside the segment the roll closed, past the recovery point
    # (the later segments dropped), some kept unsynced records of it, and some kept
    # records of the newest segment.
    assert min(kept_before) < history.newest < max(kept_after), \
        (sorted(kept_before), sorted(kept_after), history.newest)
    assert max(kept_before) > len(history.durable), sorted(kept_before)
