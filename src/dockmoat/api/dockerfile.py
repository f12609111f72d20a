"""Dockerfile instructions as the builder's parser reads them (commit and import `changes`).

dockerd joins the `changes` values with newlines and parses them with BuildKit's
Dockerfile parser (moby/buildkit frontend/dockerfile/parser): parser directives
(`# escape=` ``` ` ```) at the very top, comment lines, blank lines, and line
continuations (the escape character, then optional blanks, at the end of a line)
that join the next line, comments and blank lines inside a continuation skipped.
Reading the same way is what makes `WORKDIR /pro\\` + newline + `c/self/fd/8`,
or the same with an escape directive, visible as `/proc/self/fd/8`.

Values are not expanded here (quotes, escapes, `$VAR` from the image's
environment): a caller that needs a value refuses one that expansion could
change (`needs_expansion`). Pure; no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_BLANKS = " \t"


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper case
    arguments: str  # as written, continuations joined
    line: int  # 1-based, where it starts


class DockerfileError(ValueError):
    """Text the builder would refuse (or read in a way we do not model)."""


def parse(text: str) -> tuple[list[Instruction], str]:
    """(instructions, escape character) of Dockerfile text."""
    lines = text.replace("\r\n", "\n").split("\n")
    escape = "\\"
    index = 0
    seen: set[str] = set()
    # Directives: only at the very top, before any other line (a blank line ends them).
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index])
        if match is None:
            break
        name, value = match.group(1).lower(), match.group(2)
        if name in seen:
            raise DockerfileError(f"the directive {name} is given twice")
        seen.add(name)
        if name == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(f"invalid escape token {value!r}")
            escape = value
        index += 1
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number in range(index, len(lines)):
        line = lines[number]
        stripped = line.lstrip(_BLANKS)
        if stripped.startswith("#"):
            continue  # a comment, also inside a continuation
        if not stripped.strip(_BLANKS):
            continue  # blank: skipped, also inside a continuation
        if not pending:
            start = number + 1
        match = continuation.search(line)
        if match is not None:
            pending.append(line[: match.start()])
            continue
        pending.append(line)
        out.append(_instruction("".join(pending), start))
        pending = []
    if pending:
        out.append(_instruction("".join(pending), start))
    return out, escape


def _instruction(joined: str, line: int) -> Instruction:
    text = joined.strip(_BLANKS)
    keyword, _, arguments = text.partition(" ")
    if "\t" in keyword:
        keyword, _, rest = keyword.partition("\t")
        arguments = rest + " " + arguments if arguments else rest
    return Instruction(keyword.upper(), arguments.strip(_BLANKS), line)


def needs_expansion(value: str, escape: str) -> bool:
    """Whether the builder could read `value` as something else (quotes, escapes, $)."""
    return any(char in value for char in ("$", "'", '"', escape, "\\"))


def changes(values: list[str]) -> tuple[list[Instruction], str]:
    """The instructions of a commit's or import's `changes` values (joined as dockerd does)."""
    return parse("\n".join(values))
