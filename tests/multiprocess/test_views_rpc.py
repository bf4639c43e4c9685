"""Request-reply across processes: server and requester in different processes, and a
server killed mid-request whose request another server then answers."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time

import pytest

import streamlog

CTX = mp.get_context("spawn")


def _handler(m):
    if m.value == b"fail":
        raise ValueError("bad input")
    if m.value == b"hang":
        time.sleep(3600)  # a stuck handler: its process is killed
    return b"%d:" % os.getpid() + m.value.upper()


def _serve(path, ready, stop, ack_wait_s):
    with streamlog.open(path) as log:
        with log.rpc("svc").serve(_handler, workers=2, ack_wait_s=ack_wait_s):
            ready.set()
            stop.wait(60)


def _request_many(path, n, out):
    with streamlog.open(path) as log:
        rpc = log.rpc("svc")
        out.put([rpc.request(b"r%d" % i, timeout=10) for i in range(n)])


def test_server_in_another_process_answers_requests(tmp_path):
    """Requests from this process are answered by a server in a child process, each with
    its own reply; the child's handler errors arrive here as RemoteError."""
    path = str(tmp_path / "s")
    ready, stop = CTX.Event(), CTX.Event()
    child = CTX.Process(target=_serve, args=(path, ready, stop, 30))
    child.start()
    try:
        assert ready.wait(30)
        with streamlog.open(path) as log:
            rpc = log.rpc("svc")
            for i in range(100):
                assert rpc.request(b"x%d" % i, timeout=10) == \
                    b"%d:X%d" % (child.pid, i)
            with pytest.raises(streamlog.RemoteError) as exc:
                rpc.request(b"fail", timeout=10)
            assert exc.value.type_name == "ValueError"
            assert rpc.request(b"after", timeout=10).endswith(b"AFTER")
    finally:
        stop.set()
        child.join(30)
    assert child.exitcode == 0


def test_requester_in_another_process_gets_replies_from_here(tmp_path):
    """A child process's requests are answered by a server running in this process."""
    path = str(tmp_path / "s")
    out = CTX.Queue()
    with streamlog.open(path) as log:
        with log.rpc("svc").serve(_handler, workers=2):
            child = CTX.Process(target=_request_many, args=(path, 50, out))
            child.start()
            replies = out.get(timeout=60)
            child.join(30)
    assert child.exitcode == 0
    assert replies == [b"%d:R%d" % (os.getpid(), i) for i in range(50)]


def test_request_of_a_killed_server_is_answered_by_another(tmp_path):
    """A server process SIGKILLed in the middle of a request loses its lease when
    ack_wait_s passes; a second server answers the request before its deadline."""
    path = str(tmp_path / "s")
    ready, stop = CTX.Event(), CTX.Event()
    child = CTX.Process(target=_serve, args=(path, ready, stop, 0.5))
    child.start()
    assert ready.wait(30)
    with streamlog.open(path) as log:
        rpc = log.rpc("svc")
        req = log.existing_topic("svc.requests")
        group = req.group("svc.servers", ack_wait_s=0.5, dead_letter=rpc.dead_letter_topic)
        seen = req.notify_seq(0)
        result = {}

        def ask():
            try:
                result["reply"] = rpc.request(b"hang", timeout=20)
            except BaseException as e:  # noqa: BLE001 - asserted below
                result["error"] = e

        t = threading.Thread(target=ask)
        t.start()
        # wait until the child has leased the request, then kill it mid-handler
        end = time.monotonic() + 20
        while not group.pending() and time.monotonic() < end:
            req.wait(0, seen, 0.05)
        assert group.pending(), "the child never took the request"
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        group.close()

        def answer(m):
            return b"rescued:" + m.value

        with rpc.serve(answer, ack_wait_s=0.5):
            t.join(30)
    assert result.get("reply") == b"rescued:hang", result
