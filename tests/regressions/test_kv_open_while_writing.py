"""Regression: opening a key-value namespace while another thread is inside a write
transaction deadlocked (LMDB's writer lock was awaited with the GIL held)."""

from __future__ import annotations

import multiprocessing as mp
import threading

import streamlog


def _scenario(path):
    with streamlog.open(path) as log:
        kv = log.kv("busy")
        kv.put(b"x", b"1")
        stop = threading.Event()

        def busy():
            while not stop.is_set():
                kv.transact(lambda tx: [tx.get(b"x") for _ in range(200)])

        t = threading.Thread(target=busy)
        t.start()
        try:
            for i in range(30):
                assert log.kv(f"fresh{i}").get(b"k") is None
        finally:
            stop.set()
            t.join()


def test_new_namespace_opens_while_another_thread_writes(tmp_path):
    """Opening fresh namespaces makes progress while another thread keeps running Python
    code inside write transactions (run in a child: a deadlock holds the GIL)."""
    child = mp.get_context("spawn").Process(target=_scenario, args=(str(tmp_path / "s"),))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        child.join()
        raise AssertionError("opening a namespace deadlocked against a writing thread")
    assert child.exitcode == 0
