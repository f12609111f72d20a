"""A small Groovy tokenizer: enough of Jenkinsfile syntax to find strings and their lines.

It reads what Groovy reads: `//` and `/* */` comments, `'...'`, `"..."`, `'''...'''`,
`\"\"\"...\"\"\"`, slashy `/.../` and dollar-slashy `$/.../$` strings, backslash line
continuations inside strings, and `${...}` expressions (with strings and braces of their
own) inside GStrings. So a `{` inside a string or a `//` inside a URL is not code.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

from dockmoat.errors import ConfigError

Kind = Literal["ident", "string", "punct"]
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "$": "$"}
_MAX_SOURCE = 2_000_000  # characters; a Jenkinsfile is never that large
# After these tokens a `/` starts a slashy string; after anything else it divides.
_VALUE_END_PUNCT = frozenset(")]}")


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
        elif source.startswith("$/", i):
            text, end = _dollar_slashy(source, i + 2, line)
            tokens.append(Token("string", text, line))
            line += source.count("\n", i, end)
            i = end
        elif ch == "/" and _slashy_allowed(tokens):
            text, end = _slashy(source, i + 1, line)
            tokens.append(Token("string", text, line))
            line += source.count("\n", i, end)
            i = end
        elif ch.isalnum() or ch == "_":
            # Names and numbers (`4`, `0x1F`, `1.5e3`): neither matters, both end a value.
            j = i
            while j < n and (source[j].isalnum() or source[j] == "_"):
                j += 1
            tokens.append(Token("ident", source[i:j], line))
            i = j
        else:
            tokens.append(Token("punct", ch, line))
            i += 1
    return tokens


def _slashy_allowed(tokens: list[Token]) -> bool:
    """A `/` after a value (a name, a string, `)`) divides; elsewhere it opens a string."""
    if not tokens:
        return True
    last = tokens[-1]
    if last.kind == "string":
        return False
    if last.kind == "ident":
        return last.text in ("return", "case", "in", "assert")
    return last.text not in _VALUE_END_PUNCT


def _continuation(source: str, i: int) -> int:
    """Length of a backslash line continuation at i (`\\` + newline), else 0."""
    if source.startswith("\\\n", i):
        return 2
    if source.startswith("\\\r\n", i):
        return 3
    return 0


def _string(source: str, start: int, quote: str, line: int) -> tuple[str, int]:
    """Content of a string literal whose opening quote ends at `start`; (text, end index)."""
    out: list[str] = []
    i = start
    gstring = quote[0] == '"'
    while i < len(source):
        if source.startswith(quote, i):
            return "".join(out), i + len(quote)
        ch = source[i]
        if ch == "\n" and len(quote) == 1:
            break
        skip = _continuation(source, i)
        if skip:
            # Kept as `\` + newline: a shell joins it the same way, and lines stay counted.
            out.append("\\\n")
            i += skip
            continue
        if ch == "\\" and i + 1 < len(source):
            nxt = source[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        if gstring and source.startswith("${", i):
            end = _expression_end(source, i + 2, line)
            out.append(source[i:end])
            i = end
            continue
        out.append(ch)
        i += 1
    raise ConfigError(f"unterminated string starting at line {line}")


def _expression_end(source: str, start: int, line: int) -> int:
    """Index just after the `}` closing a `${` whose body starts at `start`."""
    depth, i = 1, start
    while i < len(source):
        ch = source[i]
        if ch in "'\"":
            quote = source[i : i + 3] if source.startswith(ch * 3, i) else ch
            _, i = _string(source, i + len(quote), quote, line)
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ConfigError(f"unterminated ${{...}} in the string starting at line {line}")


def _slashy(source: str, start: int, line: int) -> tuple[str, int]:
    """`/.../`: only `\\/` is an escape; may span lines."""
    out: list[str] = []
    i = start
    while i < len(source):
        if source.startswith("\\/", i):
            out.append("/")
            i += 2
            continue
        if source[i] == "/":
            return "".join(out), i + 1
        out.append(source[i])
        i += 1
    raise ConfigError(f"unterminated slashy string starting at line {line}")


def _dollar_slashy(source: str, start: int, line: int) -> tuple[str, int]:
    """`$/.../$`: `$$` is a dollar and `$/` a slash; may span lines."""
    out: list[str] = []
    i = start
    while i < len(source):
        if source.startswith("/$", i):
            return "".join(out), i + 2
        if source.startswith("$$", i) or source.startswith("$/", i):
            out.append(source[i + 1])
            i += 2
            continue
        out.append(source[i])
        i += 1
    raise ConfigError(f"unterminated dollar-slashy string starting at line {line}")


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
