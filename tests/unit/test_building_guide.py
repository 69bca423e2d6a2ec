"""docs/building.md shows the worked example's code as it is in examples/quotes.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "building.md"
# In the guide: an HTML comment naming the file and section, then the fenced block.
INCLUDED = re.compile(r"<!-- (?P<file>[\w/.]+):(?P<section>\w+) -->\n```python\n(?P<code>.*?)```", re.S)


def section(path: Path, name: str) -> str:
    text = path.read_text()
    found = re.search(rf"# --8<-- \[start:{name}\]\n(.*?)# --8<-- \[end:{name}\]", text, re.S)
    assert found, f"{path} has no section {name!r}"
    return found.group(1).strip() + "\n"


def included_blocks() -> list[tuple[str, str, str]]:
    return [(m["file"], m["section"], m["code"]) for m in INCLUDED.finditer(GUIDE.read_text())]


def test_the_guide_includes_both_sections_of_the_example() -> None:
    assert {(file, name) for file, name, _ in included_blocks()} == {
        ("examples/quotes.py", "router"),
        ("examples/quotes.py", "app"),
    }


@pytest.mark.parametrize(("file", "name", "code"), included_blocks(), ids=lambda v: str(v)[:20])
def test_each_included_block_is_the_files_code(file: str, name: str, code: str) -> None:
    assert code.strip() + "\n" == section(ROOT / file, name)


def test_the_readme_links_the_guide_on_its_first_screen() -> None:
    first_screen = (ROOT / "README.md").read_text().splitlines()[:30]
    assert any("docs/building.md" in line for line in first_screen)
