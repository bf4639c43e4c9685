"""Regression: a child forked while another thread of the parent was inside an LMDB call
(the interval syncer's env.sync(), a write transaction) hung forever when it opened the
store again: closing the inherited environment waited for the parent's thread."""

import multiprocessing
import os
import threading
import time

import streamlog


def _open_and_append(path):
    with streamlog.open(path) as log:
        log.topic("t").append(b"child")
    os._exit(0)


def test_children_open_the_store_while_the_parent_uses_lmdb(tmp_path):
    """Forks taken while parent threads commit and sync LMDB all open, append and exit."""
    path = str(tmp_path / "s")
    ctx = multiprocessing.get_context("fork")
    with streamlog.open(path) as log:
        t = log.topic("t")
        kv = log.kv("busy")
        stop = threading.Event()

        def hammer_sync():
            while not stop.is_set():
                log._meta.sync()

        def hammer_writes():
            i = 0
            while not stop.is_set():
                kv.put(b"k%d" % (i % 50), b"v")
                i += 1

        threads = [threading.Thread(target=hammer_sync), threading.Thread(target=hammer_writes)]
        for th in threads:
            th.start()
        try:
            children = []
            for _ in range(30):
                c = ctx.Process(target=_open_and_append, args=(path,))
                c.start()
                children.append(c)
            deadline = time.monotonic() + 30
            for c in children:
                c.join(max(0.1, deadline - time.monotonic()))
            hung = [c for c in children if c.exitcode is None]
            for c in hung:
                c.kill()
                c.join()
            assert not hung, f"{len(hung)} children hung opening the store"
            assert [c.exitcode for c in children] == [0] * 30
        finally:
            stop.set()
            for th in threads:
                th.join()
        assert t.end_offset(0) == 30
