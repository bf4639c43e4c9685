"""Every ```python block of README.md and docs/*.md runs, so the docs cannot drift from the code.

The blocks of one file run in order in one namespace (later blocks may use
what earlier ones defined), in a fresh temporary directory made the working
directory. A block is skipped only when the line before its fence is a
``<!-- no-test: reason -->`` comment giving the reason.
"""

from __future__ import annotations

import gc
import re
import sys
import textwrap
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```python[ \t]*$")
NO_TEST = re.compile(r"^<!--\s*no-test:\s*(\S.*?)\s*-->\s*$")


def doc_files() -> list[Path]:
    files = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    return [f for f in files if f.exists()]


def python_blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """(line number, code, skip reason or None) of each ```python block of ``path``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    i = 0
    while i < len(lines):
        if FENCE.match(lines[i].strip()):
            start = i + 1
            j = start
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            if j == len(lines):
                raise AssertionError(f"{path.name}:{i + 1}: unclosed ```python block")
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            m = NO_TEST.match(lines[k].strip()) if k >= 0 else None
            code = textwrap.dedent("\n".join(lines[start:j]))
            out.append((start + 1, code, m.group(1) if m else None))
            i = j + 1
        else:
            i += 1
    return out


def test_block_extraction_honours_the_no_test_marker(tmp_path):
    """The extractor finds every block, with its line, and skips only marked ones."""
    doc = tmp_path / "x.md"
    doc.write_text("text\n```python\na = 1\n```\n<!-- no-test: needs a NATS server -->\n\n"
                   "```python\nraise SystemExit\n```\n```bash\nls\n```\n")
    assert python_blocks(doc) == [(3, "a = 1", None), (8, "raise SystemExit",
                                                        "needs a NATS server")]


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_run(path, tmp_path, monkeypatch):
    """Each unmarked ```python block of the file runs without error, in order."""
    blocks = python_blocks(path)
    monkeypatch.chdir(tmp_path)
    # A real module in sys.modules: libraries that resolve classes by their module
    # name (eventsourcing does) must be able to import what a block defines.
    name = f"streamlog_docs_{path.stem.replace('-', '_')}"
    module = types.ModuleType(name)
    sys.modules[name] = module
    namespace = module.__dict__
    try:
        for line, code, skip in blocks:
            if skip is not None:
                continue
            try:
                exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
            except BaseException as e:
                raise AssertionError(f"{path.relative_to(ROOT)}, block at line {line} "
                                     f"failed: {type(e).__name__}: {e}") from e
    finally:
        for value in list(namespace.values()):  # close stores the blocks left open
            close = getattr(value, "close", None)
            if callable(close) and type(value).__module__.startswith("streamlog"):
                try:
                    close()
                except Exception:  # noqa: BLE001 - cleanup must reach every handle
                    pass
        namespace.clear()
        sys.modules.pop(name, None)
        gc.collect()
