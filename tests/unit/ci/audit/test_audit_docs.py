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
