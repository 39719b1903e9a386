"""The README's claims that name tests stay true: every test the "What we tried to break" table cites exists."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def test_every_test_the_what_we_tried_to_break_table_names_exists():
    rows = [line for line in section("What we tried to break").splitlines() if line.startswith("| ")][2:]
    assert len(rows) >= 20, "the table of tries"
    for row in rows:
        cited = re.findall(r"`?(tests/[\w/]+\.py)::(\w+)", row)
        assert cited, f"row names no test: {row[:80]}"
        for path, name in cited:
            source = (ROOT / path).read_text(encoding="utf-8")
            assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{path}::{name} (README) does not exist"
