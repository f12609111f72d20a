"""The README's table of the seed's snippets is the tool's real output."""

from __future__ import annotations

import re
from pathlib import Path

from dockmoat.ci.audit import audit_paths

REPO = Path(__file__).resolve().parents[4]
SEED = REPO / "tests" / "unit" / "ci" / "fixtures" / "seed"
_ROW = re.compile(r"^\| [^|]+ \| `([^`]+)` \| (\d) \| (.*) \|$")
_FINDING = re.compile(r"`([a-z-]+)` \((high|medium|low), (\d+)\)")


def test_docs_table_matches_the_tool() -> None:
    rows = [_ROW.match(line) for line in (REPO / "README.md").read_text().splitlines()]
    table = {m.group(1): (int(m.group(2)), m.group(3)) for m in rows if m}
    assert len(table) == 9
    for name, (exit_code, cell) in table.items():
        result = audit_paths([str(SEED / name)])
        documented = [(r, s, int(n)) for r, s, n in _FINDING.findall(cell)]
        actual = [(f.rule.id, f.severity.value, f.line) for f in result.findings]
        assert documented == actual, name
        assert exit_code == result.exit_code, name


_SECTION = re.compile(r"^### `([a-z-]+)`\n(.*?)(?=^### |^## )", re.S | re.M)
_EXAMPLE = re.compile(r"Example \(`([^`]+)`\):\n\n```[a-z]*\n(.*?)```", re.S)


def test_docs_list_every_rule_with_an_example_that_reports_it() -> None:
    from dockmoat.ci.audit import ALL_RULES, audit_source

    doc = (REPO / "docs" / "audit.md").read_text()
    sections = {m.group(1): m.group(2) for m in _SECTION.finditer(doc)}
    assert set(sections) >= {rule.id for rule in ALL_RULES}
    for rule in ALL_RULES:
        body = sections[rule.id]
        assert "Fix:" in body, rule.id
        assert rule.severity.value.capitalize() in body.split(".")[0], rule.id
        example = _EXAMPLE.search(body)
        assert example is not None, rule.id
        findings, _ = audit_source(example.group(2), example.group(1))
        assert rule.id in {f.rule.id for f in findings}, (rule.id, findings)
        # The summary table links to the section, which SARIF's helpUri points at.
        assert f"[`{rule.id}`](#{rule.id})" in doc
