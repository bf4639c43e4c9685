"""`streamlog top`: the live view, in a pipe (--once) and in a real 80-column terminal
(tmux), and the `groups` table at 80 columns."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest

import streamlog

TIMEOUT_S = 60
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(streamlog.__file__)))
_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)}


def sl(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamlog", *map(str, args)],
                          capture_output=True, text=True, timeout=TIMEOUT_S, env=_ENV)


@pytest.fixture
def busy(tmp_path):
    """A store with a long topic name, two groups (one with a dead letter) and a lease."""
    path = tmp_path / "store"
    with streamlog.open(path) as log:
        t = log.topic("orders-eu-central-with-a-long-name", partitions=3)
        t.append_many([b"x"] * 300, keys=[b"k%d" % i for i in range(300)])
        g = t.group("billing-service-consumers", max_deliver=1)
        msgs = g.poll(max_records=50, timeout=1)
        g.ack(msgs[1:])
        msgs[0].nack(error="bad")  # max_deliver=1: dead-lettered
        g.poll(max_records=5, timeout=1)  # leased, left unacked
        g.close()
        t.group("analytics", mode="exclusive").close()
    return path


def test_top_once_shows_topics_groups_rates_and_dead_letters(busy):
    r = sl("top", busy, "--once", "--interval", "0.2")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "orders-eu-central-with-a-long-name" in out
    assert "billing-service-consumers" in out and "analytics" in out
    line = next(x for x in out.splitlines() if "billing-service-consumers" in x)
    cells = line.split()
    assert "1" in cells  # one dead letter
    assert "appends/s" in out and "oldest" in out


def test_top_refuses_a_missing_store_clearly(tmp_path):
    r = sl("top", tmp_path / "nope", "--once")
    assert r.returncode != 0
    assert "nope" in r.stderr and "Traceback" not in r.stderr


class _Tmux:
    """A private tmux server (its own socket) with one 80x40 window."""

    def __init__(self, command: str) -> None:
        assert shutil.which("tmux"), "tmux is needed (CI installs it)"
        self.socket = f"streamlog-test-{uuid.uuid4().hex[:8]}"
        self._run("new-session", "-d", "-x", "80", "-y", "40", "-s", "t", command)

    def _run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True,
                              capture_output=True, text=True, timeout=TIMEOUT_S).stdout

    def screen(self) -> str:
        return self._run("capture-pane", "-p", "-t", "t")

    def wait_for(self, predicate, what: str) -> str:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"the terminal never showed {what}:\n{text}")
            time.sleep(0.1)  # polling the screen for a condition, not a timing guess

    def keys(self, *keys: str) -> None:
        self._run("send-keys", "-t", "t", *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def _shell(*args) -> str:
    env = f"PYTHONPATH={shlex.quote(_ENV['PYTHONPATH'])} TERM=xterm-256color"
    cmd = " ".join(shlex.quote(str(a)) for a in (sys.executable, "-m", "streamlog", *args))
    return f"env {env} {cmd}; echo EXITED $?; sleep 600"


def _fits_80(text: str) -> None:
    for line in text.splitlines():
        assert len(line) <= 80, line
        assert "…" not in line, f"a cell was cut: {line!r}"


def test_top_in_a_real_80_column_terminal_follows_appends_and_quits_on_ctrl_c(busy):
    term = _Tmux(_shell("top", busy, "--interval", "0.3"))
    try:
        first = term.wait_for(lambda s: "billing-service" in s and "trend/s" in s,
                              "the first frame")
        _fits_80(first)
        # Appends and acks from another process show up as rates within a refresh or two.
        with streamlog.open(busy) as log:
            t = log.existing_topic("orders-eu-central-with-a-long-name")
            g = t.group("billing-service-consumers")

            def moving(s: str) -> bool:
                t.append_many([b"y"] * 50)
                g.ack(g.poll(max_records=25, timeout=0))
                return "↑" in s

            frame = term.wait_for(moving, "a rising lag")
            g.close()
        _fits_80(frame)
        assert "analytics" in frame
        term.keys("C-c")
        term.wait_for(lambda s: "EXITED 0" in s, "a clean exit on Ctrl-C")
    finally:
        term.close()


def test_groups_table_keeps_whole_cells_at_80_columns(busy):
    term = _Tmux(_shell("groups", busy))
    try:
        text = term.wait_for(lambda s: "EXITED 0" in s, "the groups table")
    finally:
        term.close()
    _fits_80(text)
    # The names fold onto more lines, never cut: without the figures they read whole.
    flat = re.sub(r"[\s\d,]", "", text)
    assert "orders-eu-central-with-a-long-name/billing-service-consumers(shared)" in flat
    assert "orders-eu-central-with-a-long-name/analytics(exclusive)" in flat
    assert "dead" in text and "letters" in text


def test_metrics_once_exports_lag_ages_and_dead_letters_of_a_store(busy):
    r = sl("metrics", busy, "--once")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    topic = 'topic="orders-eu-central-with-a-long-name"'
    line = next(x for x in text.splitlines()
                if x.startswith("streamlog_group_dead_letters{") and "billing" in x)
    assert topic in line and line.endswith(" 1.0")
    assert any(x.startswith("streamlog_group_partition_lag{") and 'group="analytics"' in x
               for x in text.splitlines())
    assert any(x.startswith("streamlog_group_oldest_unacked_age_seconds{")
               for x in text.splitlines())
    # The consumers closed, so their leases went back: no lease, no lease age.
    assert not any(x.startswith("streamlog_group_oldest_lease_age_seconds{")
                   for x in text.splitlines())
