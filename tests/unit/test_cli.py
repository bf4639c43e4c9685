"""The `streamlog` command line in process (typer's CliRunner): every command, its errors."""

from __future__ import annotations

import datetime
import json
import os
import socket
import time

import pytest
from typer.testing import CliRunner

import streamlog
from streamlog import inspection as sl_inspect
from streamlog.cli import app

COMMANDS = ["topics", "create", "describe", "alter", "delete", "produce", "consume", "tail",
            "groups", "dump", "verify", "repair", "retention", "compact", "bench", "demo",
            "metrics"]


def run(*args: str, input: str | bytes | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


@pytest.fixture
def data(tmp_path):
    """A store with topic 'orders' (3 partitions, 30 keyed records) and 'empty'; closed."""
    path = tmp_path / "data"
    with streamlog.open(path) as log:
        t = log.topic("orders", partitions=3)
        for i in range(30):
            t.append(b"order-%d" % i, key=f"customer-{i % 4}", headers={"n": str(i)})
        log.topic("empty")
    return path


def records(path, topic: str) -> list:
    with streamlog.open(path) as log:
        t = log.existing_topic(topic)
        return [r for p in range(t.partitions) for r in t.read(p)]


# ------------------------------------------------------------------ help
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    """`streamlog COMMAND --help` exits 0 and shows a usage example."""
    result = run(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Example: streamlog " + command in result.output


def test_no_command_shows_the_command_list():
    """`streamlog` alone lists every command instead of failing silently."""
    result = run()
    for command in COMMANDS:
        assert command in result.output
    assert result.output.startswith("Usage: streamlog ") and "error:" not in result.output


# ------------------------------------------------------------ create/topics
def test_create_then_topics_lists_it_with_its_figures(tmp_path):
    """create makes the store and the topic; topics shows it (table and JSON)."""
    d = tmp_path / "new"
    result = run("create", d, "orders", "--partitions", "3")
    assert result.exit_code == 0, result.output
    assert "created" in result.stdout and "3 partitions" in result.stdout
    table = run("topics", d)
    assert table.exit_code == 0 and "orders" in table.stdout
    rows = json.loads(run("topics", d, "--json").stdout)
    assert rows == [{"topic": "orders", "partitions": 3, "records": 0, "bytes": 0,
                     "append_rate_per_s": 0.0}]


def test_create_parses_sizes_and_ages_into_the_topic_config(tmp_path):
    """--segment-bytes/--retention-bytes/--retention-age take units (KiB, MB, d, h)."""
    d = tmp_path / "s"
    result = run("create", d, "logs", "--segment-bytes", "64KiB", "--retention-bytes", "1MB",
                 "--retention-age", "7d", "--max-record-bytes", "1024")
    assert result.exit_code == 0, result.output
    desc = json.loads(run("describe", d, "logs", "--json").stdout)
    cfg = desc["config"]
    assert cfg["segment_bytes"] == 65536
    assert cfg["retention"] == [1_000_000, 7 * 86400]
    assert cfg["max_record_bytes"] == 1024


@pytest.mark.parametrize("option,value", [("--segment-bytes", "12XB"),
                                          ("--retention-age", "soon"),
                                          ("--retention-bytes", "-5")])
def test_create_rejects_a_bad_quantity_naming_the_option(tmp_path, option, value):
    """A size or age that does not parse is a usage error naming the option; no store made."""
    d = tmp_path / "s"
    result = run("create", d, "logs", option, value)
    assert result.exit_code == 2
    assert option in result.stderr and value in result.stderr
    assert not d.exists()


def test_create_an_existing_topic_fails_unless_if_not_exists(data):
    """Creating a topic twice is an error; --if-not-exists accepts matching options only."""
    again = run("create", data, "orders", "--partitions", "3")
    assert again.exit_code == 1 and "already exists" in again.stderr
    assert run("create", data, "orders", "--if-not-exists").exit_code == 0
    clash = run("create", data, "orders", "--partitions", "5", "--if-not-exists")
    assert clash.exit_code == 1 and "partitions" in clash.stderr
    assert "Traceback" not in clash.output


def test_create_rejects_a_bad_topic_name(tmp_path):
    """An invalid topic name is a one-line usage error naming it; no store is made."""
    result = run("create", tmp_path / "s", "bad name!")
    assert result.exit_code == 2 and not (tmp_path / "s").exists()
    assert len(result.stderr.splitlines()) == 1
    assert "bad name!" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("args, culprit", [
    (["create", "{d}", "t", "--partitions", "lots"], "--partitions lots"),
    (["create", "{d}", "t", "-p", "lots"], "-p lots"),
    (["create", "{d}", "t", "--partitions=0"], "--partitions 0"),
    (["create", "{d}", "t", "--segment-bytes", "0"], "--segment-bytes 0"),
    (["create", "{d}", "t", "--segment-bytes", "3GiB"], "--segment-bytes 3GiB"),
    (["create", "{d}", "t", "--retention-bytes", "0"], "--retention-bytes 0"),
    (["create", "{d}", "t", "--retention-age", "0d"], "--retention-age 0d"),
    (["create", "{d}", "t", "--max-record-bytes", "0"], "--max-record-bytes 0"),
    (["consume", "{d}", "t", "--format", "xml"], "--format xml"),
    (["consume", "{d}", "t", "--limit", "0"], "--limit 0"),
    (["consume", "{d}", "t", "--bogus"], "--bogus"),
    (["metrics", "{d}", "--port", "99999"], "--port 99999"),
    (["topics", ""], "''"),
    (["verify", "{d}", "extra-arg"], "extra-arg"),
    (["verify"], "DIR"),
    (["frobnicate", "{d}"], "frobnicate"),
])
def test_usage_errors_are_one_line_naming_the_option_as_typed_and_its_value(tmp_path, args,
                                                                            culprit):
    """Bad usage: exit 2, one line on stderr naming the option as typed and its value, no
    usage block, nothing on stdout, no store made."""
    d = tmp_path / "s"
    result = run(*[str(d) if a == "{d}" else a for a in args])
    assert result.exit_code == 2, result.output
    assert culprit in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Usage:" not in result.stderr and result.stdout == ""
    assert not d.exists()


def test_an_empty_directory_argument_says_so():
    """`topics ""` names the empty path and DIR instead of printing ": no such directory"."""
    result = run("topics", "")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: DIR: '' is an empty path")


def test_a_long_name_is_shortened_in_the_message(data, tmp_path):
    """A 300-character name is shown as its first 40 characters and "...", not whole."""
    long = "b" * 200
    for args in (["create", tmp_path / "s", long + "!"], ["describe", data, long],
                 ["topics", tmp_path / (long + "c" * 100)]):
        result = run(*args)
        assert result.exit_code in (1, 2)
        assert "b" * 40 + "..." in result.stderr and "b" * 41 not in result.stderr
        assert len(result.stderr.splitlines()) == 1


def test_metrics_on_a_busy_port_names_the_address_and_port(data):
    """A port another program listens on: exit 1 naming ADDR:PORT, not a bare errno."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = run("metrics", data, "--port", str(port))
    assert result.exit_code == 1
    assert f"127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
    assert len(result.stderr.splitlines()) == 1


# ------------------------------------------------------------------ describe
def test_describe_shows_partitions_offsets_sizes_and_segments(data):
    """describe reports each partition's offsets, records, bytes and segment files."""
    result = run("describe", data, "orders", "--segments")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "partitions" in out and "keep everything" in out and "segments" in out
    assert "00000000000000000000.log" in out
    desc = json.loads(run("describe", data, "orders", "--json").stdout)
    assert sum(p["records"] for p in desc["partitions"]) == 30
    assert all(p["bytes"] > 0 for p in desc["partitions"] if p["records"])
    assert [p["partition"] for p in desc["partitions"]] == [0, 1, 2]


def test_describe_unknown_topic_names_it_and_lists_the_known_ones(data):
    """An unknown topic is a short error that names it and the topics that exist."""
    result = run("describe", data, "nope")
    assert result.exit_code == 1
    assert "'nope'" in result.stderr and "orders" in result.stderr
    assert "Traceback" not in result.output


# ------------------------------------------------------------------- produce
def test_produce_appends_one_record_per_stdin_line_with_key_and_headers(data):
    """Each stdin line becomes a record carrying --key and every --header."""
    result = run("produce", data, "empty", "--key", "k1", "-H", "src=cli", "-H", "x=1=2",
                 input="first\nsecond\n\nlast")
    assert result.exit_code == 0, result.output
    assert "appended 4 records" in result.stderr
    got = records(data, "empty")
    assert [r.value for r in got] == [b"first", b"second", b"", b"last"]
    assert all(r.key == b"k1" and r.headers == {"src": b"cli", "x": b"1=2"} for r in got)


def test_produce_key_separator_splits_key_and_value(data):
    """--key-separator takes each line's key from before the first separator."""
    result = run("produce", data, "orders", "--key-separator", ":",
                 input="alice:one\nbob:two\nalice:three:3\n")
    assert result.exit_code == 0, result.output
    got = [r for r in records(data, "orders") if r.key in (b"alice", b"bob")]
    assert sorted((r.key, r.value) for r in got) == [
        (b"alice", b"one"), (b"alice", b"three:3"), (b"bob", b"two")]
    with streamlog.open(data) as log:
        t = log.existing_topic("orders")
        p = t.append(b"probe", key="alice").partition
        alice = [r.value for r in t.read(p) if r.key == b"alice"]
    assert alice == [b"one", b"three:3", b"probe"]  # one key, one partition, append order


def test_produce_line_without_separator_stops_naming_the_line(data):
    """A line lacking the key separator is an error naming its number; earlier lines stay."""
    result = run("produce", data, "empty", "--key-separator", "=", input="a=1\nno-separator\n")
    assert result.exit_code == 1
    assert "line 2" in result.stderr
    assert [r.value for r in records(data, "empty")] == [b"1"]


def test_produce_to_an_unknown_topic_creates_nothing(data):
    """produce needs an existing topic: an unknown one is an error and is not created."""
    result = run("produce", data, "ghost", input="x\n")
    assert result.exit_code == 1 and "'ghost'" in result.stderr
    with streamlog.open(data) as log:
        assert "ghost" not in log.topics()


@pytest.mark.parametrize("header", ["novalue", "=v"])
def test_produce_bad_header_form_is_a_usage_error(data, header):
    """--header needs NAME=VALUE; anything else is a usage error naming it, nothing written."""
    result = run("produce", data, "empty", "--header", header, input="x\n")
    assert result.exit_code == 2
    assert repr(header) in result.stderr and "NAME=VALUE" in result.stderr
    assert records(data, "empty") == []


def test_produce_too_large_record_is_reported(tmp_path):
    """A line over max_record_bytes is a one-line error, no traceback."""
    d = tmp_path / "s"
    assert run("create", d, "small", "--max-record-bytes", "8").exit_code == 0
    result = run("produce", d, "small", input="ok\nthis line is too long\n")
    assert result.exit_code == 1
    assert "max_record_bytes" in result.stderr and "Traceback" not in result.output


def test_produce_appends_the_lines_before_a_too_large_one_and_names_its_line(tmp_path):
    """Good lines before a line over max_record_bytes are appended, in order; the error
    names that line's number and says how many went in and that none after it did."""
    d = tmp_path / "s"
    assert run("create", d, "small", "--max-record-bytes", "1KiB").exit_code == 0
    big = "x" * 2000
    result = run("produce", d, "small", input=f"a\nb\nc\n{big}\nafter\n")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: line 4: ")
    assert "3 records before it appended, none after it" in result.stderr
    assert [r.value for r in records(d, "small")] == [b"a", b"b", b"c"]


@pytest.mark.parametrize("option, value", [("--key", "k\udcff"), ("-k", "\udcfe"),
                                           ("--header", "h=\udcff"), ("-H", "\udcff=v"),
                                           ("--key-separator", "\udcff")])
def test_produce_option_that_is_not_utf8_is_named(data, option, value):
    """A --key/-H/--key-separator whose bytes are not UTF-8 (the shell passes raw bytes as
    surrogates) is a usage error naming the option as typed; nothing is read or written."""
    result = run("produce", data, "empty", option, value, input="x\n")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {option} b") and "not valid UTF-8" in result.stderr
    assert "stdin" not in result.stderr and "line" not in result.stderr
    assert records(data, "empty") == []


def test_produce_counts_in_words_with_plurals(data):
    """The summary says "1 record" and "2 records"."""
    assert run("produce", data, "empty", input="x\n").stderr == "appended 1 record to empty\n"
    assert run("produce", data, "empty", input="x\ny\n").stderr == \
        "appended 2 records to empty\n"


# ------------------------------------------------------------------- consume
def test_consume_prints_every_partition_from_the_start_as_text(data):
    """consume without options prints every record of every partition, values only."""
    result = run("consume", data, "orders")
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.splitlines()) == sorted(f"order-{i}" for i in range(30))


def test_consume_json_format_carries_every_field(data):
    """--format json prints one object per record with key, value, headers and position."""
    result = run("consume", data, "orders", "--format", "json", "--partition", "0")
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    expected = [r for r in records(data, "orders") if r.partition == 0]
    assert [d["offset"] for d in docs] == [r.offset for r in expected]
    for d, r in zip(docs, expected, strict=True):
        assert d["value"] == r.value.decode() and d["key"] == r.key.decode()
        assert d["headers"] == {"n": r.headers["n"].decode()}
        assert d["topic"] == "orders" and d["timestamp_ms"] == r.timestamp_ms
        assert d["time"] == _iso(r.timestamp_ms)


def _iso(ms: int) -> str:
    """ISO 8601 UTC with milliseconds, computed independently of the CLI."""
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def test_consume_hex_and_dump_show_a_human_time_next_to_epoch_ms(data):
    """hex: partition, offset, epoch ms, ISO 8601 UTC, key, value; dump: ts= and time=."""
    rec = [r for r in records(data, "orders") if r.partition == 0][0]
    line = run("consume", data, "orders", "-p", "0", "--limit", "1", "--format",
               "hex").stdout.splitlines()[0]
    assert line.split("\t")[:4] == ["0", "0", str(rec.timestamp_ms), _iso(rec.timestamp_ms)]
    dumped = run("dump", data, "orders", "-p", "0").stdout
    assert f"ts={rec.timestamp_ms} time={_iso(rec.timestamp_ms)} " in dumped


def test_consume_json_encodes_binary_values_as_base64(tmp_path):
    """Bytes that are not UTF-8 come out as {"base64": ...} in JSON, and raw in hex."""
    d = tmp_path / "s"
    with streamlog.open(d) as log:
        log.topic("bin").append(b"\xff\x00\xfe", key=b"\x80")
    doc = json.loads(run("consume", d, "bin", "--format", "json").stdout)
    assert doc["value"] == {"base64": "/wD+"} and doc["key"] == {"base64": "gA=="}
    hexline = run("consume", d, "bin", "--format", "hex").stdout.strip().split("\t")
    assert hexline[0:2] == ["0", "0"] and hexline[4:] == ["80", "ff00fe"]


def test_consume_from_offset_in_one_partition_with_a_limit(data):
    """--from starts at that offset; --partition restricts; --limit stops early."""
    expected = [r for r in records(data, "orders") if r.partition == 1]
    result = run("consume", data, "orders", "-p", "1", "--from", "2", "--format", "hex")
    offsets = [int(line.split("\t")[1]) for line in result.stdout.splitlines()]
    assert offsets == [r.offset for r in expected][2:]
    limited = run("consume", data, "orders", "--limit", "4")
    assert limited.exit_code == 0 and len(limited.stdout.splitlines()) == 4


def test_consume_from_past_the_end_starts_at_the_end_and_says_so(data):
    """--from past a partition's end prints nothing, exits 0, and says on stderr which
    partitions start at their end (a partition the offset is inside is not named)."""
    result = run("consume", data, "orders", "--from", "1000")
    assert result.exit_code == 0 and result.stdout == ""
    assert "--from 1000 is past the end of partitions 0 (end " in result.stderr
    assert "starting at the end" in result.stderr
    part = run("consume", data, "orders", "-p", "1", "--from", "5")
    assert "past the end" not in part.stderr


@pytest.mark.parametrize("args,culprit", [
    (["-p", "3"], "--partition 3"), (["--partition", "-1"], "--partition"),
    (["--from", "-4"], "--from"),
    (["--format", "xml"], "xml")])
def test_consume_bad_arguments_name_the_culprit(data, args, culprit):
    """Out-of-range partitions, negative offsets and unknown formats are clear errors."""
    result = run("consume", data, "orders", *args)
    assert result.exit_code in (1, 2)
    assert culprit in result.stderr and "Traceback" not in result.output


def test_consume_group_options_that_cannot_combine_are_refused(data):
    """--group with --partition or --from is refused before anything is read."""
    for extra in (["--partition", "0"], ["--from", "3"]):
        result = run("consume", data, "orders", "--group", "g", *extra)
        assert result.exit_code == 2 and extra[0] in result.stderr


def test_consume_with_a_group_acks_what_it_printed(data):
    """With --group every record is printed once and acked: a second run prints nothing."""
    first = run("consume", data, "orders", "--group", "audit")
    assert first.exit_code == 0, first.output
    assert sorted(first.stdout.splitlines()) == sorted(f"order-{i}" for i in range(30))
    second = run("consume", data, "orders", "--group", "audit")
    assert second.exit_code == 0 and second.stdout == ""
    with streamlog.open(data) as log:
        log.existing_topic("orders").append(b"late", key="k")
    third = run("consume", data, "orders", "--group", "audit", "--format", "json")
    assert [json.loads(x)["value"] for x in third.stdout.splitlines()] == ["late"]


def test_groups_shows_lag_per_group_and_partition(data):
    """groups lists each group with its lag (total and per partition) and pending leases."""
    assert run("consume", data, "orders", "--group", "done").exit_code == 0
    with streamlog.open(data) as log:
        t = log.existing_topic("orders")
        t.group("behind").close()
    rows = json.loads(run("groups", data, "--json").stdout)
    total = {r["group"]: r["lag"] for r in rows if "partition" not in r}
    assert total == {"behind": 30, "done": 0}
    per_part = [r for r in rows if r["group"] == "behind" and "partition" in r]
    assert sorted(r["partition"] for r in per_part) == [0, 1, 2]
    assert sum(r["lag"] for r in per_part) == 30
    table = run("groups", data, "orders")
    assert table.exit_code == 0 and "behind" in table.stdout and "lag" in table.stdout
    assert run("groups", data, "empty").stdout.strip() == "no consumer groups on topic 'empty'"


# ---------------------------------------------------------------- bad paths
READ_COMMANDS = [["topics"], ["describe", "t"], ["consume", "t"], ["tail", "t"], ["groups"],
                 ["dump", "t"], ["verify"], ["repair", "--yes"], ["retention"],
                 ["metrics", "--once"], ["produce", "t"], ["compact", "t"]]


@pytest.mark.parametrize("cmd", READ_COMMANDS, ids=lambda c: c[0])
def test_commands_on_a_missing_directory_fail_and_create_nothing(tmp_path, cmd):
    """Commands on an existing store never create one: a missing DIR is an error naming it."""
    missing = tmp_path / "missing"
    result = run(cmd[0], missing, *cmd[1:], input="x\n")
    assert result.exit_code == 1
    assert str(missing) in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert not missing.exists()


@pytest.mark.parametrize("cmd", READ_COMMANDS + [["create", "t"]], ids=lambda c: c[0])
def test_commands_on_a_regular_file_fail_naming_it(tmp_path, cmd):
    """A DIR that is a regular file is an error naming the path, for every command."""
    f = tmp_path / "file.txt"
    f.write_text("not a store")
    result = run(cmd[0], f, *cmd[1:], input="x\n")
    assert result.exit_code in (1, 2)
    assert str(f) in result.stderr and "Traceback" not in result.output
    assert f.read_text() == "not a store"


def test_commands_on_a_directory_that_is_not_a_store_say_so(tmp_path):
    """An existing directory without a store is refused and left empty."""
    result = run("topics", tmp_path)
    assert result.exit_code == 1 and "not a streamlog store" in result.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("inside", ["topics", "topics/orders/0"])
def test_a_directory_inside_a_store_names_the_store_instead_of_suggesting_create(data,
                                                                                inside):
    """`verify DIR/topics` points at DIR, never at creating a store inside a store."""
    result = run("verify", data / inside)
    assert result.exit_code == 2
    assert f"is inside the store {data}" in result.stderr
    assert f"streamlog verify {data} " in result.stderr and "create" not in result.stderr
    assert not (data / inside / "streamlog.json").exists()


def test_a_store_of_a_newer_format_is_refused_with_a_clear_message(data):
    """A store written by a newer on-disk format is a one-line error naming the directory."""
    (data / "streamlog.json").write_text(json.dumps({"format": 99}))
    result = run("topics", data)
    assert result.exit_code == 1
    assert "newer" in result.stderr and "Traceback" not in result.output


def test_a_garbled_format_file_is_a_clear_error(data):
    """A damaged streamlog.json is reported as such, no traceback."""
    (data / "streamlog.json").write_text("{not json")
    result = run("verify", data)
    assert result.exit_code == 1
    assert "streamlog.json" in result.stderr and "Traceback" not in result.output


# ---------------------------------------------------------------------- dump
def test_dump_prints_batch_headers_and_records_of_a_topic(data):
    """dump DIR TOPIC prints every batch header with its CRC status and every record."""
    result = run("dump", data, "orders", "--partition", "0")
    assert result.exit_code == 0, result.output
    expected = [r for r in records(data, "orders") if r.partition == 0]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# ") and lines[0].endswith("(partition 0)")
    batches = [x for x in lines if x.startswith("batch ")]
    assert len(batches) == len(expected) and all(x.endswith(" ok") for x in batches)
    recs = [x for x in lines if x.startswith("  | ")]
    assert [int(x.split("offset=")[1].split()[0]) for x in recs] == [r.offset for r in expected]
    assert "headers={n: b'" in recs[0]


def test_dump_of_a_segment_file_without_records(data):
    """dump SEGMENT_FILE --no-records prints batch headers only."""
    seg = sl_inspect.segment_files(data, "orders", 1)[0]
    result = run("dump", seg, "--no-records")
    assert result.exit_code == 0, result.output
    assert not any(x.startswith("  | ") for x in result.stdout.splitlines())
    assert "base_offset=0 " in result.stdout


def test_dump_of_a_file_that_is_not_a_segment_says_so(tmp_path):
    """dump of a text, empty or all-zero file exits 1 saying it is not a segment, and
    prints no batch."""
    for name, content in (("notes.txt", b"hello, this is not a segment at all\n" * 3),
                          ("empty", b""), ("zeros.bin", bytes(4096))):
        f = tmp_path / name
        f.write_bytes(content)
        result = run("dump", f)
        assert result.exit_code == 1, name
        assert f"{f}: not a segment file" in result.stderr
        assert "batch" not in result.stdout


def test_dump_argument_errors(data):
    """dump DIR needs a TOPIC; a file takes no TOPIC; a missing path is named."""
    assert run("dump", data).exit_code == 2
    seg = sl_inspect.segment_files(data, "orders", 0)[0]
    assert run("dump", seg, "orders").exit_code == 2
    missing = run("dump", data / "nope.log")
    assert missing.exit_code == 1 and "nope.log" in missing.stderr


# ----------------------------------------------------------------- retention
def test_retention_dry_run_lists_then_apply_deletes(tmp_path):
    """retention --dry-run lists closed segments past max_age_s and keeps them; retention
    deletes exactly those (and -v shows the library's info log of each deletion)."""
    d = tmp_path / "s"
    with streamlog.open(d) as log:
        t = log.topic("kept", segment_bytes=4096, retention=streamlog.Retention(max_age_s=1))
        for _ in range(40):
            t.append_many([b"y" * 100] * 10)
        before = log.stats()["topics"]["kept"]["partitions"][0]
    time.sleep(1.2)  # every closed segment's newest record is now older than max_age_s
    dry = run("retention", d, "--dry-run")
    assert dry.exit_code == 0, dry.output
    listed = [x for x in dry.stdout.splitlines() if ".log" in x]
    assert listed and "would delete" in dry.stdout
    with streamlog.open(d, read_only=True) as log:  # (a writable open applies retention)
        assert log.stats()["topics"]["kept"]["partitions"][0]["segments"] == before["segments"]
    applied = run("--verbose", "retention", d)
    assert applied.exit_code == 0 and f"deleted {len(listed)} segment" in applied.stdout
    assert applied.stderr.count("INFO: streamlog: retention removed") == len(listed)
    with streamlog.open(d) as log:
        after = log.stats()["topics"]["kept"]["partitions"][0]
        t = log.existing_topic("kept")
        # every record is past max_age_s, the active segment's too: it was rolled and
        # went with the others, and an empty active segment follows them
        assert after["segments"] == before["segments"] - len(listed) + 1
        assert after["start_offset"] == after["end_offset"] == before["end_offset"]
        assert list(t.read(0)) == []
    assert run("retention", d).stdout.strip() == "nothing to delete"


# --------------------------------------------------------- bench, demo, metrics
def test_bench_prints_a_summary_table_with_ratios(tmp_path):
    """bench measures appends and reads against plain-file baselines and leaves no files."""
    result = run("bench", tmp_path, "--records", "2000", "--value-bytes", "32")
    assert result.exit_code == 0, result.output
    for name in ("append (one record per call)", "append_many", "read (iterate",
                 "read_batch", 'durability="always"'):
        assert name in result.stdout
    assert "x" in result.stdout  # ratios such as 0.85x
    assert os.listdir(tmp_path) == []


def test_demo_runs_its_tour_in_a_temporary_directory():
    """demo without DIR runs every available step and exits 0."""
    result = run("demo")
    assert result.exit_code == 0, result.output
    for title in ("Topics, partitions and keyed appends", "read_batch", "offset_for_time",
                  "Retention", "verify", "Compaction and tables"):
        assert title in result.stdout
    assert "was compacted away" in result.stdout
    assert "failed" not in result.stdout
    # epoch ms come with their ISO 8601 UTC time; counts read as words
    assert "t0 = 1700000000000 ms (2023-11-14T22:13:20.000Z)" in result.stdout
    assert "(s)" not in result.stdout and "0 problems" in result.stdout


def test_version_prints_the_package_version():
    """`streamlog --version` (and -V) prints the version and exits 0."""
    for flag in ("--version", "-V"):
        result = run(flag)
        assert result.exit_code == 0
        assert result.stdout.startswith(f"streamlog {streamlog.__version__} ")


def test_counts_are_words_with_their_plural(tmp_path):
    """"1 partition" / "2 partitions" in verify's summary; "1 record" in produce's."""
    d = tmp_path / "s"
    assert run("create", d, "one").exit_code == 0
    assert "every batch of 1 partition in " in run("verify", d).stdout
    assert run("create", d, "two", "-p", "2").stdout.startswith("topic 'two' created: "
                                                                 "2 partitions in ")
    assert run("produce", d, "one", input="x\n").stderr == "appended 1 record to one\n"


def test_demo_keeps_the_store_in_a_given_directory_and_refuses_a_non_empty_one(tmp_path):
    """demo DIR leaves a store there; a second run refuses the now non-empty directory."""
    d = tmp_path / "demo"
    first = run("demo", d)
    assert first.exit_code == 0, first.output
    assert "orders" in run("topics", d).stdout
    again = run("demo", d)
    assert again.exit_code == 1 and "not empty" in again.stderr


def test_metrics_once_prints_prometheus_text(data):
    """metrics --once prints one scrape in the Prometheus text format."""
    pytest.importorskip("prometheus_client")
    result = run("metrics", data, "--once")
    assert result.exit_code == 0, result.output
    assert 'streamlog_partition_records{partition="0",topic="orders"}' in result.stdout
    assert "streamlog_topics 2.0" in result.stdout


# ------------------------------------------------------------------ logging
def test_library_warnings_reach_stderr_and_a_torn_tail_is_not_corruption(data):
    """A torn tail found on open is logged as a warning on stderr; verify still exits 0.

    (The cut needs an open for writing: verify opens read-only and changes nothing.)"""
    seg = sl_inspect.segment_files(data, "orders", 0)[-1]
    batches = list(sl_inspect.dump_segment(seg, records=False))
    end = batches[-1].file_pos + batches[-1].batch_length
    with open(seg, "r+b") as f:
        first = f.read(30)  # the start of a batch header: a write cut short
        f.seek(end)
        f.write(first)
        f.truncate(end + len(first))
    os.unlink(os.path.join(os.path.dirname(seg), "control"))  # as after a reboot
    result = run("produce", data, "orders", input="")
    assert result.exit_code == 0, result.output
    assert "WARNING" in result.stderr and "torn tail" in result.stderr
    assert seg in result.stderr
    assert run("verify", data).exit_code == 0
    assert len(records(data, "orders")) == 30


def test_library_is_silent_by_default():
    """The streamlog logger has a NullHandler: nothing is printed unless the app configures it."""
    import logging

    assert any(isinstance(h, logging.NullHandler)
               for h in logging.getLogger("streamlog").handlers)


def test_no_module_of_the_package_shadows_the_standard_library():
    """The file-inspection API lives in streamlog.inspection; no top-level module of
    the package has a standard-library module's name."""
    import pathlib
    import sys
    from importlib import import_module

    import streamlog.inspection as current

    assert current.__all__
    pkg = pathlib.Path(streamlog.__file__).parent
    mods = {p.stem for p in pkg.glob("*.py")} - {"__init__", "__main__"}
    assert not mods & set(sys.stdlib_module_names), mods & set(sys.stdlib_module_names)
    assert import_module("inspect").signature  # the standard library's, untouched
