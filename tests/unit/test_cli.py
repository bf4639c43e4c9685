"""The `streamlog` command line in process (typer's CliRunner): every command, its errors."""

from __future__ import annotations

import json
import os
import time

import pytest
from typer.testing import CliRunner

import streamlog
from streamlog import inspect as sl_inspect
from streamlog.cli import app

COMMANDS = ["topics", "create", "describe", "produce", "consume", "tail", "groups", "dump",
            "verify", "repair", "retention", "bench", "demo", "metrics"]


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
    """An invalid topic name is a one-line error naming it."""
    result = run("create", tmp_path / "s", "bad name!")
    assert result.exit_code == 1
    assert "bad name!" in result.stderr and "Traceback" not in result.output


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


def test_consume_json_encodes_binary_values_as_base64(tmp_path):
    """Bytes that are not UTF-8 come out as {"base64": ...} in JSON, and raw in hex."""
    d = tmp_path / "s"
    with streamlog.open(d) as log:
        log.topic("bin").append(b"\xff\x00\xfe", key=b"\x80")
    doc = json.loads(run("consume", d, "bin", "--format", "json").stdout)
    assert doc["value"] == {"base64": "/wD+"} and doc["key"] == {"base64": "gA=="}
    hexline = run("consume", d, "bin", "--format", "hex").stdout.strip().split("\t")
    assert hexline[0:2] == ["0", "0"] and hexline[3:] == ["80", "ff00fe"]


def test_consume_from_offset_in_one_partition_with_a_limit(data):
    """--from starts at that offset; --partition restricts; --limit stops early."""
    expected = [r for r in records(data, "orders") if r.partition == 1]
    result = run("consume", data, "orders", "-p", "1", "--from", "2", "--format", "hex")
    offsets = [int(line.split("\t")[1]) for line in result.stdout.splitlines()]
    assert offsets == [r.offset for r in expected][2:]
    limited = run("consume", data, "orders", "--limit", "4")
    assert limited.exit_code == 0 and len(limited.stdout.splitlines()) == 4


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
                 ["metrics", "--once"], ["produce", "t"]]


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
                  "Retention", "verify"):
        assert title in result.stdout
    assert "failed" not in result.stdout


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
