"""README.md must tell the truth about the code: the configuration and metric tables."""

from __future__ import annotations

import re
from pathlib import Path

from exporter.config import markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"
GOLDEN = Path(__file__).with_name("golden") / "families.txt"


def test_config_table_is_generated_from_settings() -> None:
    text = README.read_text()
    block = re.search(r"<!-- config-table:[^>]*-->\n(.*?)\n<!-- /config-table -->", text, re.S)
    assert block, "config table markers missing"
    assert block.group(1).strip() == markdown_table()


def test_every_exported_family_is_documented_with_its_type() -> None:
    text = README.read_text()
    documented = dict(re.findall(r"^\| `([a-z_]+)` \| (gauge|counter|histogram) \|", text, re.M))
    exported = {}
    for line in GOLDEN.read_text().splitlines():
        if line.startswith("# TYPE"):
            _, _, name, kind = line.split()
            exported[name] = kind
    assert exported == documented


def test_readme_starts_with_the_two_commands() -> None:
    head = README.read_text().split("---", 1)[0]
    assert "conda-env-exporter --demo-if-no-root" in head and "bash tests/run" in head
    assert "bash tests/run" in (README.parent / ".ci" / "run").read_text().replace("exec bash", "bash")
