"""The lifecycle commands as real processes: `--version`, `delete`, `alter`, and `groups`
resets and deletion, with their refusals; and a consumer process that sees the partitions
`alter` adds from another process."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest

import streamlog
from streamlog.backends.local import codec as _codec

from .test_cli_subprocess import _ENV, TIMEOUT_S, sl, start, wait_for_line


def keys_for(partition: int, partitions: int) -> bytes:
    i = 0
    while _codec.partition_for_key(b"key-%d" % i, partitions) != partition:
        i += 1
    return b"key-%d" % i


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data"
    with streamlog.open(path) as log:
        t = log.topic("orders", partitions=2)
        t.append_many([b"v%d" % i for i in range(10)], keys=[b"k%d" % i for i in range(10)])
        g = t.group("billing")
        g.ack(g.poll(100, timeout=0))
        g.close()
    return path


def config(path, topic="orders") -> dict:
    with streamlog.open(path, read_only=True) as log:
        return dict(log.existing_topic(topic).config)


def test_version():
    proc = sl("--version")
    assert proc.returncode == 0
    assert proc.stdout.decode().startswith(f"streamlog {streamlog.__version__} ")


# ------------------------------------------------------------------ delete
def test_delete_without_yes_refuses_off_a_terminal_and_keeps_the_topic(data):
    proc = sl("delete", data, "orders", input=b"y\n")
    assert proc.returncode == 1
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert "topic 'orders'" in out and "2 partitions, 10 records" in out and "billing" in out
    assert err.startswith("error: deletion of topic 'orders' not done") and "--yes" in err
    assert config(data)["partitions"] == 2


@pytest.mark.parametrize("answer, deleted", [(b"n\n", False), (b"y\n", True)])
def test_delete_asks_on_a_terminal(data, answer, deleted):
    """On a terminal, delete asks; "n" keeps the topic (exit 1), "y" deletes it."""
    master, slave = pty.openpty()
    try:
        child = subprocess.Popen([sys.executable, "-m", "streamlog", "delete", str(data),
                                  "orders"], stdin=slave, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=_ENV)
        os.write(master, answer)
        out, err = child.communicate(timeout=TIMEOUT_S)
    finally:
        os.close(master)
        os.close(slave)
    assert (child.returncode == 0) is deleted, err
    with streamlog.open(data, read_only=True) as log:
        assert ("orders" not in log.topics()) is deleted
    if not deleted:
        assert b"not done (not confirmed)" in err


def test_delete_with_yes(data):
    proc = sl("delete", data, "orders", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "deleted topic 'orders': 10 records, 1 group" in proc.stdout.decode()
    with streamlog.open(data, read_only=True) as log:
        assert "orders" not in log.topics()
    proc = sl("delete", data, "orders", "--yes")
    assert proc.returncode == 1 and b"unknown topic 'orders'" in proc.stderr


def test_delete_refuses_while_a_consumer_is_live_unless_forced(data):
    child = start("consume", data, "orders", "--group", "live", "--follow", "--format", "json")
    try:
        wait_for_line(child.stdout, '"value": "v0"')  # it polled: a live member
        proc = sl("delete", data, "orders", "--yes")
        assert proc.returncode == 1
        err = proc.stderr.decode()
        assert "not deleted: groups have live consumers (live: " in err and "--force" in err
        assert config(data)["partitions"] == 2
        proc = sl("delete", data, "orders", "--yes", "--force")
        assert proc.returncode == 0, proc.stderr
    finally:
        child.kill()
        child.communicate(timeout=TIMEOUT_S)


# ------------------------------------------------------------------- alter
def test_alter_prints_what_changed_and_warns_about_keys(data):
    proc = sl("alter", data, "orders", "--partitions", "4", "--retention-age", "7d",
              "--max-record-bytes", "1MiB")
    assert proc.returncode == 0, proc.stderr
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert "partitions" in out and "│ 2 " in out and "│ 4 " in out and "max age 1w" in out
    assert "keys map to partitions anew" in err and "offset 0" in err
    cfg = config(data)
    assert cfg["partitions"] == 4 and cfg["retention"] == [None, 604800.0]
    assert cfg["max_record_bytes"] == 1 << 20
    proc = sl("alter", data, "orders", "--retention-age", "none")
    assert proc.returncode == 0, proc.stderr
    assert "keys map" not in proc.stderr.decode()
    assert config(data)["retention"] is None


@pytest.mark.parametrize("args, code, message", [
    (["--partitions", "1"], 1, "--partitions 1: topic 'orders' has 2; partitions only grow"),
    ([], 2, "nothing to alter"),
    (["--retention-bytes", "lots"], 2, "--retention-bytes 'lots': expected a size"),
    (["--retention-age", "0"], 2, "must be more than 0 seconds"),
    (["--max-record-bytes", "1TB"], 2, "--max-record-bytes"),
    (["--dedupe-window", "1h", "--retention-age", "1m"], 1, "longer than the retention"),
])
def test_alter_refuses_bad_input_before_changing_anything(data, args, code, message):
    before = config(data)
    proc = sl("alter", data, "orders", *args)
    assert proc.returncode == code
    err = proc.stderr.decode()
    assert message in err and "Traceback" not in err
    assert config(data) == before


def test_a_consumer_process_sees_partitions_that_alter_adds(data):
    """A group consumer process with the topic open is given records of partitions that
    another process's `alter` added after it started; a producer handle opened before the
    change appends by the new partition count."""
    child = start("consume", data, "orders", "--group", "follower", "--follow",
                  "--format", "json")
    try:
        wait_for_line(child.stdout, '"value": "v0"')
        with streamlog.open(data) as log:
            t = log.existing_topic("orders")  # opened before the change
            proc = sl("alter", data, "orders", "--partitions", "4")
            assert proc.returncode == 0, proc.stderr
            for p in (2, 3):
                assert t.append(b"new-%d" % p, key=keys_for(p, 4)).partition == p
        seen = {}
        while len(seen) < 2:
            line = json.loads(wait_for_line(child.stdout, '"value": "new-'))
            seen[line["partition"]] = line["value"]
        assert seen == {2: "new-2", 3: "new-3"}
    finally:
        child.kill()
        child.communicate(timeout=TIMEOUT_S)


def test_tail_follows_partitions_that_alter_adds(data):
    """`tail` (every partition) follows the new partitions from their first record."""
    child = start("tail", data, "orders", "--format", "json", "--timeout", "60")
    try:
        wait_for_line(child.stderr, "following orders")
        proc = sl("alter", data, "orders", "--partitions", "3")
        assert proc.returncode == 0, proc.stderr
        assert "following 2@0 too" in wait_for_line(child.stderr, "grew to 3 partitions")
        with streamlog.open(data) as log:
            log.existing_topic("orders").append(b"in-2", key=keys_for(2, 3))
        line = json.loads(wait_for_line(child.stdout, "in-2"))
        assert (line["partition"], line["offset"]) == (2, 0)
    finally:
        child.kill()
        child.communicate(timeout=TIMEOUT_S)


# ------------------------------------------------------------------ groups
def positions(path, group="billing") -> list[int]:
    with streamlog.open(path, read_only=True) as log:
        groups = log.stats()["groups"]["orders"]
        return [p["committed"] for p in groups[group]["partitions"]]


def test_group_reset_shows_the_table_and_changes_nothing_without_yes(data):
    before = positions(data)
    proc = sl("groups", data, "orders", "billing", "--to-earliest")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert "reset plan" in out and "old position" in out and "new position" in out
    assert "nothing changed: pass --yes to apply" in proc.stderr.decode()
    assert positions(data) == before and sum(before) == 10


def test_group_reset_with_yes(data):
    proc = sl("groups", data, "orders", "billing", "--to-offset", "2", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert positions(data) == [2, 2]
    proc = sl("groups", data, "orders", "billing", "--to-datetime", "2000-01-01", "--yes",
              "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["applied"] and [p["new"] for p in doc["partitions"]] == [0, 0]
    assert [p["old"] for p in doc["partitions"]] == [2, 2]
    assert positions(data) == [0, 0]
    assert sl("groups", data, "orders", "billing", "--to-latest", "--yes").returncode == 0
    assert sum(positions(data)) == 10


@pytest.mark.parametrize("args, message", [
    (["billing"], "given without --to-earliest"),
    (["billing", "--to-earliest", "--to-latest"], "give one reset target"),
    (["billing", "--to-earliest", "--delete"], "reset or delete, not both"),
    (["billing", "--to-datetime", "yesterday"], "expected an ISO 8601 time"),
    (["--to-earliest"], "needs TOPIC and GROUP"),
    (["--yes"], "--yes applies only to a reset or --delete"),
])
def test_groups_usage_errors(data, args, message):
    proc = sl("groups", data, "orders", *args)
    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr.decode()


def test_unknown_group_is_named(data):
    proc = sl("groups", data, "orders", "nope", "--to-latest", "--yes")
    assert proc.returncode == 1
    assert "topic 'orders' has no group 'nope' (groups: billing)" in proc.stderr.decode()


def test_reset_and_delete_refuse_a_group_with_a_live_consumer_unless_forced(data):
    with streamlog.open(data) as log:
        log.existing_topic("orders").append(b"late", key=b"k")
    child = start("consume", data, "orders", "--group", "billing", "--follow")
    try:
        wait_for_line(child.stdout, "late")
        plan = sl("groups", data, "orders", "billing", "--to-earliest")
        assert plan.returncode == 0
        assert "it would be refused: 1 live consumer" in plan.stderr.decode()
        proc = sl("groups", data, "orders", "billing", "--to-earliest", "--yes")
        assert proc.returncode == 1
        err = proc.stderr.decode()
        assert "has 1 live consumer" in err and "--force" in err
        assert sum(positions(data)) == 11
        proc = sl("groups", data, "orders", "billing", "--delete", "--yes")
        assert proc.returncode == 1 and b"not deleted: it has 1 live consumer" in proc.stderr
        proc = sl("groups", data, "orders", "billing", "--to-earliest", "--yes", "--force")
        assert proc.returncode == 0, proc.stderr
        assert "forced: 1 live consumer" in proc.stderr.decode()
        assert wait_for_line(child.stdout, "v0")  # the consumer goes on from the start
    finally:
        child.kill()
        child.communicate(timeout=TIMEOUT_S)
    proc = sl("groups", data, "orders", "billing", "--delete", "--yes")
    assert proc.returncode == 0, proc.stderr
    with streamlog.open(data, read_only=True) as log:
        assert log.existing_topic("orders").groups() == []


def test_group_delete_without_yes_refuses_off_a_terminal(data):
    proc = sl("groups", data, "orders", "billing", "--delete")
    assert proc.returncode == 1
    assert "not done" in proc.stderr.decode() and "--yes" in proc.stderr.decode()
    with streamlog.open(data, read_only=True) as log:
        assert log.existing_topic("orders").groups() == ["billing"]
    assert sum(positions(data)) == 10
