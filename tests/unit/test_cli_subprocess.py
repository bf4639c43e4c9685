"""The command line as real processes (`python -m streamlog`): pipes, following across
processes, the metrics endpoint, and errors that never show a traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request

import pytest

import streamlog
from streamlog import inspection as sl_inspect
from streamlog.backends.local.codec import HEADER_SIZE, RECORD_HEADER_SIZE

TIMEOUT_S = 60


# The children import the streamlog under test (the one this process imported), whatever
# the working directory and whatever else is installed.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(streamlog.__file__)))
_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)}


def sl(*args, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamlog", *map(str, args)], input=input,
                          capture_output=True, timeout=TIMEOUT_S, env=_ENV)


def _default_sigint() -> None:
    # A test run started in the background by a non-interactive shell ignores
    # SIGINT, and children inherit that: give them Ctrl-C back, as a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streamlog", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_ENV,
                            preexec_fn=_default_sigint)


def wait_for_line(stream, needle: str) -> str:
    """Read ``stream`` until a line containing ``needle`` (the child says it is ready)."""
    while True:
        line = stream.readline().decode()
        if not line:
            raise AssertionError(f"stream ended before {needle!r}")
        if needle in line:
            return line


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data"
    with streamlog.open(path) as log:
        log.topic("orders", partitions=2)
    return path


def test_module_and_installed_script_both_run():
    """`python -m streamlog` and the installed `streamlog` script print the help."""
    assert b"Commands:" in sl("--help").stdout
    script = shutil.which("streamlog")
    assert script is not None, "the streamlog entry point is not installed"
    proc = subprocess.run([script, "--help"], capture_output=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0 and b"Commands:" in proc.stdout


def test_produce_from_a_pipe_then_consume_round_trips(data):
    """Lines piped into produce come back from consume, each partition in order."""
    lines = [f"line {i}" for i in range(2000)]
    proc = sl("produce", data, "orders", input=("\n".join(lines) + "\n").encode())
    assert proc.returncode == 0, proc.stderr
    out = sl("consume", data, "orders", "--format", "json")
    assert out.returncode == 0, out.stderr
    docs = [json.loads(x) for x in out.stdout.decode().splitlines()]
    assert sorted(d["value"] for d in docs) == sorted(lines)
    for p in (0, 1):
        mine = [d["offset"] for d in docs if d["partition"] == p]
        assert mine == list(range(len(mine)))


def test_consume_follow_prints_what_another_process_appends(data):
    """consume --follow wakes up on appends made by another process and exits at --limit."""
    with streamlog.open(data) as log:
        log.existing_topic("orders").append(b"before")
    child = start("consume", data, "orders", "--follow", "--limit", "4", "--format", "json")
    try:
        wait_for_line(child.stderr, "following")
        with streamlog.open(data) as log:
            t = log.existing_topic("orders")
            for i in range(3):
                t.append(b"live %d" % i, key=f"k{i}")
        out, err = child.communicate(timeout=TIMEOUT_S)
    finally:
        child.kill()
    assert child.returncode == 0, err
    values = [json.loads(x)["value"] for x in out.decode().splitlines()]
    assert sorted(values) == ["before", "live 0", "live 1", "live 2"]


def test_consume_from_past_the_end_with_follow_prints_later_appends(data):
    """consume --from N --follow with N past the end starts at the end: records appended
    later at lower offsets than N are printed, not skipped."""
    with streamlog.open(data) as log:
        log.existing_topic("orders").append_many([b"old"] * 4)
    child = start("consume", data, "orders", "--from", "500", "--follow", "--limit", "3",
                  "--timeout", "60")  # ends by itself should it miss the appends
    try:
        line = wait_for_line(child.stderr, "past the end")
        assert "starting at the end" in line
        wait_for_line(child.stderr, "following")
        with streamlog.open(data) as log:
            t = log.existing_topic("orders")
            for i in range(3):
                t.append(b"new %d" % i)
        out, err = child.communicate(timeout=TIMEOUT_S)
    finally:
        child.kill()
    assert child.returncode == 0, err
    assert sorted(out.decode().splitlines()) == ["new 0", "new 1", "new 2"]


def test_produce_a_9mib_line_after_good_lines_keeps_them(data):
    """The case from the field: good lines, a 9 MiB line, another line, through a pipe."""
    big = b"x" * (9 * 1024 * 1024)
    proc = sl("produce", data, "orders", input=b"a\nb\nc\n" + big + b"\nafter\n")
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.startswith("error: line 4: ") and "3 records before it appended" in err
    with streamlog.open(data) as log:
        t = log.existing_topic("orders")
        got = sorted(r.value for p in range(t.partitions) for r in t.read(p))
    assert got == [b"a", b"b", b"c"]


def test_produce_with_a_raw_byte_key_names_the_option(data):
    """A --key of raw non-UTF-8 bytes from the shell: exit 2 naming --key."""
    proc = subprocess.run([sys.executable, "-m", "streamlog", "produce", str(data), "orders",
                           "--key", b"\xff\xfe"], input=b"x\n", capture_output=True,
                          timeout=TIMEOUT_S, env=_ENV)
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith("error: --key b'\\xff\\xfe': not valid UTF-8")


def test_tail_starts_at_the_end(data):
    """tail prints only records appended after it started."""
    with streamlog.open(data) as log:
        log.existing_topic("orders").append_many([b"old"] * 10)
    child = start("tail", data, "orders", "--limit", "2")
    try:
        wait_for_line(child.stderr, "following")
        with streamlog.open(data) as log:
            log.existing_topic("orders").append_many([b"new 1", b"new 2"])
        out, err = child.communicate(timeout=TIMEOUT_S)
    finally:
        child.kill()
    assert child.returncode == 0, err
    assert sorted(out.decode().splitlines()) == ["new 1", "new 2"]


def test_tail_timeout_ends_a_quiet_follow(data):
    """tail --timeout exits 0 after that long without a record."""
    proc = sl("tail", data, "orders", "--timeout", "0.3")
    assert proc.returncode == 0 and proc.stdout == b""


@pytest.mark.parametrize("args,culprit", [
    (["topics", "{missing}"], "{missing}"),
    (["describe", "{file}", "orders"], "{file}"),
    (["consume", "{data}", "nope"], "'nope'"),
    (["consume", "{data}", "orders", "--partition", "9"], "--partition 9"),
    (["produce", "{data}", "orders", "--header", "oops"], "'oops'"),
    (["create", "{data}", "bad/name"], "bad/name"),
    (["verify", "{data}", "extra-arg"], "extra-arg"),
])
def test_bad_input_is_one_short_line_on_stderr_never_a_traceback(tmp_path, data, args,
                                                                  culprit):
    """Bad paths, topics, partitions, headers and arguments: a non-zero exit and a short
    stderr message naming the culprit."""
    f = tmp_path / "file.txt"
    f.write_text("x")
    subst = {"{missing}": str(tmp_path / "missing"), "{file}": str(f), "{data}": str(data)}
    argv = [subst.get(a, a) for a in args]
    proc = sl(*argv, input=b"x\n")
    err = proc.stderr.decode()
    assert proc.returncode in (1, 2)
    assert subst.get(culprit, culprit) in err
    assert "Traceback" not in err and proc.stdout == b""
    assert len(err.strip().splitlines()) == 1, err  # usage errors too: no usage block
    assert not (tmp_path / "missing").exists()


def _fill(d) -> None:
    with streamlog.open(d) as log:
        t = log.topic("t", segment_bytes=4096)
        for i in range(200):
            t.append(b"value %05d" % i)


def test_a_corrupted_directory_verify_repair_verify(tmp_path):
    """A flipped byte: verify exits 1 naming file and byte, repair --yes quarantines, verify
    exits 0 and the records before the damage read back."""
    d = tmp_path / "s"
    _fill(d)
    seg = sl_inspect.segment_files(d, "t", 0)[1]
    batch = list(sl_inspect.dump_segment(seg, records=False))[4]
    with open(seg, "r+b") as fh:
        fh.seek(batch.file_pos + HEADER_SIZE + RECORD_HEADER_SIZE)
        fh.write(b"X")
    bad = sl("verify", d)
    assert bad.returncode == 1
    assert f"{seg} at byte {batch.file_pos}".encode() in bad.stdout
    fixed = sl("repair", d, "--yes")
    assert fixed.returncode == 0, fixed.stderr
    good = sl("verify", d)
    assert good.returncode == 0, good.stdout
    out = sl("consume", d, "t")
    assert out.stdout.decode().splitlines() == [f"value {i:05d}"
                                               for i in range(batch.base_offset)]
    assert os.listdir(d / "quarantine" / "t" / "0")


def test_metrics_endpoint_serves_prometheus_text_on_loopback(data):
    """metrics --port 0 serves /metrics on 127.0.0.1 until SIGINT, then exits 0."""
    pytest.importorskip("prometheus_client")
    with streamlog.open(data) as log:
        log.existing_topic("orders").append_many([b"a", b"b", b"c"])
    child = start("metrics", data, "--port", "0")
    try:
        line = wait_for_line(child.stderr, "serving metrics")
        url = line.split(" at ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            body = resp.read().decode()
        child.send_signal(signal.SIGINT)
        child.communicate(timeout=TIMEOUT_S)
    finally:
        child.kill()
    assert child.returncode == 0
    records = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
               for line in body.splitlines() if line.startswith("streamlog_partition_records{")}
    assert sum(records.values()) == 3
    assert 'streamlog_partition_appended_records_total{partition="0",topic="orders"}' in body


def test_consume_into_a_closed_pipe_exits_without_a_traceback(data):
    """Piping consume into a reader that stops early (like `head`) ends quietly."""
    with streamlog.open(data) as log:
        log.existing_topic("orders").append_many([b"x" * 1000] * 20000)
    child = start("consume", data, "orders")
    child.stdout.readline()
    child.stdout.close()
    err = child.stderr.read().decode()
    child.wait(TIMEOUT_S)
    assert err == "" and child.returncode == 0  # quiet, as `head` expects of a writer
