"""The distribution's name, and docs that stand alone: what a new user installs and reads."""

from __future__ import annotations

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIST = "streamlog-embedded"  # "streamlog" on the package index is an unrelated project


def _texts() -> dict[str, str]:
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "streamlog").rglob("*.py"))]
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in paths}


def test_the_distribution_has_a_name_of_its_own():
    """pyproject names the distribution streamlog-embedded; the import name stays streamlog."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DIST
    assert project["scripts"]["streamlog"] == "streamlog.cli:main"


def test_install_commands_name_the_distribution():
    """Every `pip install` of a released package (README, docs, messages) names
    streamlog-embedded, with or without extras; installing a checkout stays `pip install .`."""
    wrong = []
    for name, text in _texts().items():
        for m in re.finditer(r"pip install\s+['\"]?([A-Za-z0-9_.\-]+)", text):
            if m.group(1) not in (DIST, ".", "-e"):
                wrong.append(f"{name}: {m.group(0)}")
    assert not wrong, wrong
    assert f"pip install {DIST}" in (ROOT / "README.md").read_text()
    assert f"pip install {DIST}" in (ROOT / "docs" / "getting-started.md").read_text()


def test_docs_cite_no_file_outside_the_repository():
    """README, docs and code state their guarantees themselves: no SPEC.md citation."""
    cited = [name for name, text in _texts().items() if "SPEC" in text]
    assert not cited, cited


def test_the_demo_directory_is_ignored_by_git():
    """`streamlog demo ./streamlog-demo`, as the README suggests, leaves nothing to commit."""
    assert "streamlog-demo/" in (ROOT / ".gitignore").read_text().splitlines()
