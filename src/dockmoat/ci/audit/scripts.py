"""Shell scripts embedded in CI files, scanned line by line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dockmoat.ci.audit import yamlsrc as y
from dockmoat.ci.audit.checks import check_shell
from dockmoat.ci.audit.dockerargs import join_continuations, scan_shell_line
from dockmoat.ci.audit.findings import Hit
from dockmoat.ci.audit.model import Located


def script_lines(node: Any, line: int) -> list[tuple[int, str]]:
    """Lines of a script given as a string or a (nested) list of strings."""
    seq = y.sequence(node)
    if seq is None:
        return y.text_lines(node, line) if isinstance(node, str) else []
    out: list[tuple[int, str]] = []
    for i, item in enumerate(seq):
        out.extend(script_lines(item, y.item_line(seq, i, line)))
    return out


def check_script(
    lines: list[tuple[int, str]], label: str, env_scopes: list[dict[str, Located]]
) -> Iterator[Hit]:
    for number, text in join_continuations(lines):
        yield from check_shell(scan_shell_line(text, number), number, label, env_scopes)


def built_images(lines: list[tuple[int, str]]) -> set[str]:
    """Images the script builds or tags itself (`docker build -t X`, `docker tag A X`)."""
    return {
        tag
        for number, text in join_continuations(lines)
        for tag in scan_shell_line(text, number).built
    }
