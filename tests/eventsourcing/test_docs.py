"""The code blocks of docs/event-sourcing.md run, each in a fresh interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "event-sourcing.md")


def _blocks() -> list[str]:
    with open(DOC) as f:
        text = f.read()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_page_has_code_blocks():
    """The page is found and has examples to run."""
    assert len(_blocks()) >= 4


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_code_block_runs(index):
    """Each code block runs to the end without an error (its asserts hold)."""
    code = _blocks()[index]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for key in ("PERSISTENCE_MODULE", "STREAMLOG_PATH"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env, cwd=root)
    assert proc.returncode == 0, f"block {index} failed:\n{code}\n{proc.stderr}"
