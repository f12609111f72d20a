"""A small Groovy tokenizer: enough of Jenkinsfile syntax to find strings and their lines.

It knows comments, single/double/triple-quoted strings and punctuation, so that a
`{` inside a string or a `//` inside a URL is not mistaken for code.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

from dockmoat.errors import ConfigError

Kind = Literal["ident", "string", "punct"]
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "$": "$"}
_MAX_SOURCE = 2_000_000  # characters; a Jenkinsfile is never that large


@dataclass(frozen=True)
class Token:
    kind: Kind
    text: str
    line: int  # 1-based line where the token starts


def tokenize(source: str) -> list[Token]:
    if len(source) > _MAX_SOURCE:
        raise ConfigError(f"file too large for a Jenkinsfile ({len(source)} characters)")
    tokens: list[Token] = []
    i, line, n = 0, 1, len(source)
    while i < n:
        ch = source[i]
        if ch == "\n":
            line += 1
            i += 1
        elif ch.isspace():
            i += 1
        elif source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            if end < 0:
                raise ConfigError(f"unterminated comment at line {line}")
            line += source.count("\n", i, end)
            i = end + 2
        elif ch in "'\"":
            quote = source[i : i + 3] if source.startswith(ch * 3, i) else ch
            text, end = _string(source, i + len(quote), quote, line)
            tokens.append(Token("string", text, line))
            line += source.count("\n", i, end)
            i = end
        elif ch.isalpha() or ch == "_":
            j = i
            while j < n and (source[j].isalnum() or source[j] == "_"):
                j += 1
            tokens.append(Token("ident", source[i:j], line))
            i = j
        else:
            tokens.append(Token("punct", ch, line))
            i += 1
    return tokens


def _string(source: str, start: int, quote: str, line: int) -> tuple[str, int]:
    """Content of a string literal whose opening quote ends at `start`; (text, end index)."""
    out: list[str] = []
    i = start
    while i < len(source):
        if source.startswith(quote, i):
            return "".join(out), i + len(quote)
        ch = source[i]
        if ch == "\n" and len(quote) == 1:
            break
        if ch == "\\" and i + 1 < len(source):
            nxt = source[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
        out.append(ch)
        i += 1
    raise ConfigError(f"unterminated string starting at line {line}")


_PAIRS = {"{": "}", "(": ")", "[": "]"}


def structure_problems(source: str) -> list[str]:
    """What keeps `source` from being a declarative pipeline; empty when it looks whole."""
    try:
        tokens = tokenize(source)
    except ConfigError as error:
        return [str(error)]
    problems: list[str] = []
    stack: list[Token] = []
    for token in tokens:
        if token.kind != "punct":
            continue
        if token.text in _PAIRS:
            stack.append(token)
        elif token.text in _PAIRS.values():
            if not stack or _PAIRS[stack[-1].text] != token.text:
                problems.append(f"unbalanced {token.text!r} at line {token.line}")
                return problems
            stack.pop()
    if stack:
        problems.append(f"unclosed {stack[-1].text!r} opened at line {stack[-1].line}")
    idents = [t.text for t in tokens if t.kind == "ident"]
    pairs = list(itertools.pairwise(tokens))
    if not any(a.text == "pipeline" and b.text == "{" for a, b in pairs):
        problems.append("no `pipeline {` block")
    for word in ("agent", "stages", "stage", "steps"):
        if word not in idents:
            problems.append(f"no `{word}`")
    return problems
