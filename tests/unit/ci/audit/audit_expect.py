"""The `# expect:` annotations of the audit's fixture files (shared by the audit tests)."""

from __future__ import annotations

import re
from pathlib import Path

_EXPECT = re.compile(r"(?:#|//)\s*expect(-next)?:\s*([a-z\- ]+)")


def expected_from_annotations(path: Path) -> set[tuple[int, str]]:
    """`# expect: a b` marks findings on its own line; `# expect-next: ...` on the next."""
    out: set[tuple[int, str]] = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = _EXPECT.search(line)
        if match:
            target = number + 1 if match.group(1) else number
            out.update((target, rule) for rule in match.group(2).split())
    return out
