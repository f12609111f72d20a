"""Dockerfile text as the builder's parser reads it (commit and import `changes`, and
the images a classic `POST /build` resolves).

dockerd parses Dockerfile text with BuildKit's parser (moby/buildkit
frontend/dockerfile/parser), for the classic builder and for the `changes` of a
commit or import (joined with newlines): a UTF-8 BOM at the start is dropped;
parser directives (`# escape=` ``` ` ```) at the very top; comment lines, blank
lines; line continuations (the escape character, not itself escaped, then optional
blanks, at the end of a line) that join the next line, comments and blank lines
inside a continuation skipped; then each instruction split into its keyword and
arguments at the first run of ASCII blanks. Reading the same way is what makes
`WORKDIR /pro\\` + newline + `c/self/fd/8`, or the same with an escape directive,
visible as `/proc/self/fd/8`.

Where engine versions read the same text differently (which directive names count:
`check` since BuildKit 0.14; Unicode blanks after `#` since 0.27; two carriage returns
ending a line: all dropped since 0.9, one before), the text is refused: the gateway
does not know which BuildKit the daemon vendors (Docker 20.10: 0.8).

Values are not expanded by `parse` (quotes, escapes, `$VAR` from the image's
environment): a caller that needs a value refuses one that expansion could change
(`needs_expansion`). `image_sources` expands what the classic builder expands with
build arguments only (FROM), in the subset of the shell lexer it models, and refuses
the rest. Pure; no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

_ASCII_BLANKS: Final = "\t\n\v\f\r "
# BuildKit splits the keyword from its arguments (and FROM's words) at these.
_SPLIT: Final = re.compile(r"[\t\v\f\r ]+")
# Go's RE2 `\s` (no \v, ASCII only), for the directive patterns.
_GS: Final = "[\t\n\f\r ]"
# BuildKit < 0.27 (a regexp on the line) and >= 0.27 (after `#` and Unicode blanks).
_DIRECTIVE_OLD: Final = re.compile(rf"#{_GS}*([a-zA-Z][a-zA-Z0-9]*){_GS}*={_GS}*(.+?){_GS}*\Z")
_DIRECTIVE_NEW: Final = re.compile(rf"([a-zA-Z][a-zA-Z0-9]*){_GS}*={_GS}*(.+?){_GS}*\Z")
_DIRECTIVE_NAMES: Final = (
    frozenset({"escape", "syntax"}),
    frozenset({"escape", "syntax", "check"}),
)
# Go's unicode.ToLower maps these to ASCII (strings.ToLower of keywords and stage names).
_GO_LOWER: Final = {"\u0130": "i", "\u212a": "k"}


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper case
    arguments: str  # as written (flags included), continuations joined, blanks trimmed
    line: int  # 1-based, where it starts


@dataclass(frozen=True, slots=True)
class ImageSource:
    """An image a classic build resolves in the local image store or pulls."""

    ref: str  # as the builder resolves it (build arguments expanded), e.g. "alpine:3.19"
    where: str  # for messages: "FROM on line 3", "COPY --from on line 7", ...


class DockerfileError(ValueError):
    """Text the builder would refuse (or read in a way we do not model)."""


def _go_space(char: str) -> bool:
    """Go's unicode.IsSpace (Python's isspace also counts U+001C..U+001F)."""
    return char.isspace() and char not in "\x1c\x1d\x1e\x1f"


def _go_lstrip(text: str) -> str:
    index = 0
    while index < len(text) and _go_space(text[index]):
        index += 1
    return text[index:]


def _go_trim(text: str) -> str:
    """Go's strings.TrimSpace."""
    end = len(text)
    while end > 0 and _go_space(text[end - 1]):
        end -= 1
    return _go_lstrip(text[:end])


def _go_lower(text: str) -> str:
    """Go's strings.ToLower where the result can be ASCII (other characters kept)."""
    return "".join(_GO_LOWER.get(c, c.lower() if c.isascii() else c) for c in text)


def _lines(text: str) -> list[str]:
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    out: list[str] = []
    for number, line in enumerate(lines, 1):
        if line.endswith("\r\r"):
            # BuildKit >= 0.9 drops every carriage return at the end of a line, older
            # engines one of them: a continuation, or not, depending on the engine.
            raise DockerfileError(f"line {number} ends with more than one carriage return")
        out.append(line.removesuffix("\r"))
    return out


def _escape(lines: list[str]) -> str:
    """The escape character, as every engine version reads the directives the same."""
    readings = {
        _directives(lines, new_style, names)
        for new_style in (False, True)
        for names in _DIRECTIVE_NAMES
    }
    if len(readings) != 1:
        raise DockerfileError(
            "the parser directives are read differently by different engine versions"
        )
    return readings.pop()


def _directives(lines: list[str], new_style: bool, names: frozenset[str]) -> str:
    escape = "\\"
    seen: set[str] = set()
    for raw in lines:
        line = _go_lstrip(raw)
        if new_style:
            if not line.startswith("#"):
                break
            match = _DIRECTIVE_NEW.match(_go_lstrip(line[1:]))
        else:
            match = _DIRECTIVE_OLD.match(line)
        if match is None:
            break
        name = match.group(1).lower()
        if name not in names:
            break
        if name in seen:
            raise DockerfileError(f"the directive {name} is given twice")
        seen.add(name)
        if name == "escape":
            if match.group(2) not in ("\\", "`"):
                raise DockerfileError(f"invalid escape token {match.group(2)!r}")
            escape = match.group(2)
    return escape


def parse(text: str, *, heredocs: bool = False) -> tuple[list[Instruction], str]:
    """(instructions, escape character) of Dockerfile text.

    Heredocs (`RUN <<EOF`) are consumed only with `heredocs` (BuildKit >= 0.10, whose
    RUN, COPY and ADD take them), in the plain forms `<<NAME`, `<<-NAME`, `<<'NAME'`,
    `<<"NAME"` (an optional file descriptor before): any other `<<` in those
    instructions is refused. Without, their lines come out as instructions."""
    lines = _lines(text)
    escape = _escape(lines)
    token = re.escape(escape)
    # BuildKit's: an escape preceded by another escape does not continue the line.
    continuation = re.compile(rf"([^{token}]){token}[ \t]*\Z|^{token}[ \t]*\Z")

    def trim(line: str) -> tuple[str, bool]:
        match = continuation.search(line)
        if match is None:
            return line, False
        return line[: match.start()] + (match.group(1) or ""), True

    out: list[Instruction] = []
    index = 0
    while index < len(lines):
        line = _go_lstrip(lines[index])
        index += 1
        if not line or line.startswith("#"):
            continue  # blank, comment, or directive
        start = index
        piece, more = trim(line)
        pieces = [piece]
        while more and index < len(lines):
            raw = lines[index]
            index += 1
            stripped = _go_lstrip(raw)
            if not stripped or stripped.startswith("#"):
                continue  # blank or comment inside a continuation
            piece, more = trim(raw)
            pieces.append(piece)
        instruction = _instruction("".join(pieces), start)
        out.append(instruction)
        if heredocs and instruction.keyword in _HEREDOC_TAKERS:
            for name, chomp in _heredoc_markers(instruction):
                while True:
                    if index == len(lines):
                        raise DockerfileError(f"an unterminated heredoc ({name}) on line {start}")
                    body = lines[index].lstrip("\t") if chomp else lines[index]
                    index += 1
                    if body == name:
                        break
    return out, escape


_HEREDOC_TAKERS: Final = frozenset({"RUN", "COPY", "ADD"})
_HEREDOC_MARKER: Final = re.compile(
    r"(?<![^\t ])[0-9]*<<(-?)(?:([A-Za-z0-9_]+)|'([A-Za-z0-9_]+)'|\"([A-Za-z0-9_]+)\")(?![^\t ])"
)


def _heredoc_markers(instruction: Instruction) -> list[tuple[str, bool]]:
    """(name, chomp) of each heredoc an instruction opens, in order."""
    arguments = instruction.arguments
    found = [
        (next(g for g in match.groups()[1:] if g), match.group(1) == "-")
        for match in _HEREDOC_MARKER.finditer(arguments)
    ]
    if len(found) != arguments.count("<<"):
        raise DockerfileError(
            f"a `<<` on line {instruction.line} that is not a plain heredoc (<<NAME, <<-NAME, "
            "quoted NAME) is not read"
        )
    return found


def _instruction(joined: str, line: int) -> Instruction:
    parts = _SPLIT.split(_go_trim(joined), maxsplit=1)
    arguments = _go_trim(parts[1]) if len(parts) == 2 else ""
    return Instruction(_go_lower(parts[0]).upper(), arguments, line)


def needs_expansion(value: str, escape: str) -> bool:
    """Whether the builder could read `value` as something else (quotes, escapes, $)."""
    return any(char in value for char in ("$", "'", '"', escape, "\\"))


def changes(values: list[str]) -> tuple[list[Instruction], str]:
    """The instructions of a commit's or import's `changes` values (joined as dockerd does)."""
    return parse("\n".join(values))


# --- the images of a classic build ----------------------------------------------------
#
# moby daemon/builder/dockerfile (the classic builder) on top of BuildKit's
# instructions package:
# - ARGs before the first FROM are meta ARGs (builder.go processMetaArg): their
#   defaults are expanded with the meta ARGs so far; a `buildargs` value (not null)
#   overrides a declared one; the proxy variables (HTTP_PROXY, ...) are visible without
#   a declaration (buildargs.go builtinAllowedBuildArgs).
# - FROM's image word is expanded with the meta ARGs only (dispatchers.go
#   getExpandedString); the name of an EARLIER stage (stages are recorded when they
#   end, by lower-cased name) is that stage; `scratch` is no image; anything else is
#   resolved locally or pulled.
# - COPY --from is NOT expanded (CopyCommand.Expand skips it): a stage name, a stage
#   index (strconv.ParseInt; out of range or the current stage: an error), or an image.
# - ONBUILD triggers run in a later build (or a later stage of this one, FROM a stage
#   that set them): a COPY --from trigger is listed as an image wherever it could run.

_KEYWORDS: Final = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
    "WORKDIR",
})  # fmt: skip
_HEREDOC_KEYWORDS: Final = frozenset({"RUN", "COPY", "ADD", "ONBUILD"})
_PROXY_ARGS: Final = frozenset({
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
})  # fmt: skip
#: Set by BuildKit itself (the daemon's platform) wherever FROM is expanded; their values
#: are not known here, so a BuildKit reading refuses an image name that uses them.
_PLATFORM_ARGS: Final = frozenset({
    "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
    "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
})  # fmt: skip
#: A build argument BuildKit's Dockerfile frontend reads as a `# syntax=` line.
SYNTAX_ARG: Final = "BUILDKIT_SYNTAX"
_SYNTAX_LINE: Final = re.compile(r"syntax[\t\n\v\f\r ]*=", re.IGNORECASE)
_STAGE_NAME: Final = re.compile(r"[a-z][a-z0-9_.\-]*\Z")
_VARIABLE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INDEX: Final = re.compile(r"[+-]?[0-9]+\Z")
_NOT_LITERAL: Final = frozenset("$'\"{}\\`")


@dataclass(frozen=True, slots=True)
class _Unreadable:
    """A meta ARG value not read (an error only where a FROM uses it)."""

    reason: str


_Value = str | _Unreadable
_Lookup = Callable[[str], tuple[bool, _Value]]  # name -> (set, value)


def image_sources(
    text: str, build_args: Mapping[str, str | None], *, buildkit: bool = False
) -> list[ImageSource]:
    """Every image a classic build of `text` resolves from the local image store or
    pulls (FROM, COPY --from, RUN --mount from=, ONBUILD COPY --from and RUN --mount),
    with the `buildargs` of the request (name -> value, None: given without a value).

    `buildkit`: read for the Dockerfile frontend built into dockerd (`/build?version=2`)
    as well: a custom frontend (`# syntax=`, the BUILDKIT_SYNTAX build argument) is
    refused, and so is an image name using the platform arguments BuildKit sets.

    Raises DockerfileError for anything not read confidently (fail closed: the caller
    refuses the build). Images named by the ONBUILD triggers of a base image are not in
    the text and not listed."""
    if not buildkit:
        return _image_sources(*parse(text), build_args, buildkit=False, lenient=False)
    _no_frontend(text, build_args)
    # Engines whose BuildKit reads heredocs (23.0 on) and engines whose BuildKit reads
    # their lines as instructions (20.10): both readings, every image either names.
    found: list[ImageSource] = []
    for heredocs in (True, False):
        reading = parse(text, heredocs=heredocs)
        for source in _image_sources(*reading, build_args, buildkit=True, lenient=not heredocs):
            if source not in found:
                found.append(source)
    return found


def _image_sources(
    instructions: list[Instruction],
    escape: str,
    build_args: Mapping[str, str | None],
    *,
    buildkit: bool,
    lenient: bool,
) -> list[ImageSource]:
    """`lenient`: an unknown instruction is skipped (the heredoc lines of a reading
    without heredocs; BuildKit refuses them where it reads them so)."""
    meta: dict[str, _Value | None] = {}

    def lookup(name: str) -> tuple[bool, _Value]:
        if buildkit and name in _PLATFORM_ARGS:
            return True, _Unreadable("BuildKit sets it to the daemon's platform")
        given = build_args.get(name)
        if name in meta:
            if given is not None:
                return True, given
            default = meta[name]
            return (False, "") if default is None else (True, default)
        if name in _PROXY_ARGS and given is not None:
            return True, given
        return False, ""

    sources: list[ImageSource] = []
    done: list[str] = []  # the stages before the current one ("" unnamed)
    current: str | None = None  # None: before the first FROM
    for instruction in instructions:
        keyword, line = instruction.keyword, instruction.line
        if keyword not in _KEYWORDS:
            if lenient:
                continue
            raise DockerfileError(f"unknown instruction {keyword[:40]!r} on line {line}")
        if (
            keyword in _HEREDOC_KEYWORDS
            and "<<" in instruction.arguments
            and not (buildkit and (lenient or keyword in _HEREDOC_TAKERS))
        ):
            raise DockerfileError(
                f"heredocs are not read (a {keyword} with `<<` on line {line}): "
                "their lines would be read as instructions by some engines and not others"
            )
        if keyword == "FROM":
            if current is not None:
                done.append(current)
            current, source = _from(instruction, done, lookup)
            if source is not None:
                sources.append(source)
        elif current is None:
            if keyword != "ARG":
                raise DockerfileError(
                    f"{keyword} on line {line} comes before the first FROM (only ARG may)"
                )
            meta.update(_meta_arg(instruction, escape, lookup))
        elif keyword == "COPY":
            source = _copy_from(_flags(instruction.arguments)[0], line, done, "COPY --from")
            if source is not None:
                sources.append(source)
        elif keyword == "RUN":
            sources.extend(_mount_froms(_flags(instruction.arguments)[0], line, done, "RUN"))
        elif keyword == "ADD":
            _no_from(_flags(instruction.arguments)[0], line)
        elif keyword == "ONBUILD":
            sources.extend(_onbuild(instruction))
    if current is None:
        raise DockerfileError("no FROM instruction")
    return sources


def _flags(arguments: str) -> tuple[list[str], str]:
    """(flags, the rest) as BuildKit's extractBuilderFlags splits the leading `--` words
    (which it reads byte by byte, quotes and escapes processed): refuses what could be
    read differently (quotes, escapes, non-ASCII in a flag)."""
    flags: list[str] = []
    pos = 0
    while True:
        while pos < len(arguments) and arguments[pos] in _ASCII_BLANKS:
            pos += 1
        if pos < len(arguments) and arguments[pos] in ("\udc85", "\udca0"):
            # an undecodable byte 0x85 or 0xA0, a blank to Go's byte-wise reading
            raise DockerfileError("an undecodable byte among the flags")
        if not arguments.startswith("--", pos):
            return flags, arguments[pos:]
        end = pos
        while end < len(arguments) and arguments[end] not in _ASCII_BLANKS:
            end += 1
        word = arguments[pos:end]
        if any(c in "'\"\\`" or not c.isascii() for c in word):
            raise DockerfileError(f"the flag {word[:60]!r} is not read (quotes, escapes)")
        pos = end
        if word == "--":
            return flags, arguments[pos:]
        flags.append(word)


def _from_flag(flags: list[str], line: int) -> str | None:
    value: str | None = None
    for flag in flags:
        name, equals, given = flag[2:].partition("=")
        if name != "from":
            continue  # other flags: the builder checks them
        if not equals:
            raise DockerfileError(f"--from without a value on line {line} (--from=NAME)")
        if value is not None:
            raise DockerfileError(f"--from given twice on line {line}")
        value = given
    return value


def _stage_index(value: str) -> int | None:
    """The stage index strconv.ParseInt(value, 10, 64) reads, or None (a name)."""
    if _INDEX.match(value) is None:
        return None
    digits = value.lstrip("+-").lstrip("0") or "0"
    if len(digits) > 19:
        return None  # out of range: ParseInt fails, the value is an image name
    number = int(value[0] + digits if value[0] in "+-" else digits)
    return number if -(2**63) <= number < 2**63 else None


def _check_ref(ref: str, what: str) -> str:
    if not ref:
        raise DockerfileError(f"{what}: an empty image name")
    if any(not 0x21 <= ord(c) <= 0x7E for c in ref):
        raise DockerfileError(f"{what}: {ref[:80]!r} is not an image reference")
    return ref


def _copy_from(flags: list[str], line: int, done: list[str], what: str) -> ImageSource | None:
    value = _from_flag(flags, line)
    if not value:
        return None  # no --from (or an empty one): the build context
    return _stage_or_image(value, f"{what} on line {line}", done)


def _mount_froms(flags: list[str], line: int, done: list[str], what: str) -> list[ImageSource]:
    """The images of a RUN's `--mount=...,from=NAME` flags (BuildKit's parseMount: the
    value is CSV, keys folded to lower case, the last `from` wins). The classic builder
    refuses `--mount` by itself; listing them costs it nothing."""
    found: list[ImageSource] = []
    for flag in flags:
        name, _, value = flag[2:].partition("=")
        if _go_lower(name) != "mount":
            continue
        froms = [
            field.partition("=")[2]
            for field in value.split(",")
            if _go_lower(field.partition("=")[0]) == "from"
        ]
        if len(froms) > 1:
            raise DockerfileError(f"{what} --mount on line {line}: `from` given twice")
        if froms and froms[0]:
            source = _stage_or_image(froms[0], f"{what} --mount from= on line {line}", done)
            if source is not None:
                found.append(source)
    return found


def _stage_or_image(value: str, where: str, done: list[str]) -> ImageSource | None:
    if "$" in value:
        raise DockerfileError(
            f"{where}: {value[:80]!r} is not read (the classic builder does not expand it, "
            "BuildKit does)"
        )
    _check_ref(value, where)
    index = _stage_index(value)
    if index is not None:
        if not 0 <= index < len(done):
            raise DockerfileError(f"{where}: {value} is no earlier stage's index")
        return None
    if _go_lower(value) in done:
        return None  # an earlier stage
    return ImageSource(value, where)


def _no_from(flags: list[str], line: int) -> None:
    if any(flag[2:].partition("=")[0] == "from" for flag in flags):
        raise DockerfileError(f"ADD --from on line {line}: the classic builder has none")


def _onbuild(instruction: Instruction) -> list[ImageSource]:
    line = instruction.line
    flags, trigger = _flags(instruction.arguments)
    if flags:
        raise DockerfileError(f"ONBUILD on line {line} takes no flags")
    # The trigger is parsed again where it runs (default escape character).
    inner = _instruction(trigger, line)
    if not inner.keyword:
        raise DockerfileError(f"ONBUILD on line {line} without an instruction")
    if inner.keyword in ("ONBUILD", "FROM", "MAINTAINER") or not inner.keyword.isascii():
        raise DockerfileError(f"ONBUILD {inner.keyword[:40]} on line {line} is not allowed")
    if inner.keyword == "ADD":
        _no_from(_flags(inner.arguments)[0], line)
    if inner.keyword == "RUN":
        # Stage names are those of the build it runs in: listed as images.
        return _mount_froms(_flags(inner.arguments)[0], line, [], "ONBUILD RUN")
    if inner.keyword != "COPY":
        return []
    value = _from_flag(_flags(inner.arguments)[0], line)
    if value and _stage_index(value) is not None:
        return []  # a stage index wherever it runs (or an error), never an image
    # Stage names are those of the build it runs in: listed as an image.
    source = _copy_from(_flags(inner.arguments)[0], line, [], "ONBUILD COPY --from")
    return [] if source is None else [source]


def _from(
    instruction: Instruction, done: list[str], lookup: _Lookup
) -> tuple[str, ImageSource | None]:
    """(this stage's name or "", the image it starts from or None)."""
    line = instruction.line
    where = f"FROM on line {line}"
    _, rest = _flags(instruction.arguments)  # --platform: not checked
    words = _SPLIT.split(_go_trim(rest)) if _go_trim(rest) else []
    name = ""
    if len(words) == 3 and _is_as(words[1]):
        name = _go_lower(words[2])
        if _STAGE_NAME.match(name) is None:
            raise DockerfileError(f"{where}: invalid stage name {words[2][:60]!r}")
        if name in done:
            raise DockerfileError(f"{where}: the stage name {name!r} is used twice")
    elif len(words) != 1:
        raise DockerfileError(f"{where}: FROM takes an image, or an image AS a name")
    ref = _check_ref(_expand(words[0], lookup, quotes=False, what=where), where)
    if _go_lower(ref) in done or ref.lower() == "scratch":
        return name, None  # an earlier stage, or no image
    return name, ImageSource(ref, where)


def check_frontend_args(build_args: Mapping[str, str | None]) -> None:
    """Refuses the build argument that makes BuildKit's Dockerfile frontend hand the
    build to another frontend (read before the Dockerfile is: the build request)."""
    if build_args.get(SYNTAX_ARG) is not None:
        raise DockerfileError(
            f"the build argument {SYNTAX_ARG} names a custom frontend, whose reading of "
            "the Dockerfile is not checked"
        )


def _no_frontend(text: str, build_args: Mapping[str, str | None]) -> None:
    """Refuses a custom frontend: an image the daemon pulls and runs as the Dockerfile's
    reader, which then resolves whatever images it likes, unread here. Any comment line
    before the first instruction that looks like a `syntax` directive counts (BuildKit
    versions detect it differently; reading too many is the safe side)."""
    check_frontend_args(build_args)
    for raw in _lines(text):
        line = _go_lstrip(raw)
        if not line:
            continue
        if not line.startswith("#"):
            return
        if _SYNTAX_LINE.match(_go_lstrip(line[1:])):
            raise DockerfileError(
                "a `# syntax=` line names a custom frontend, whose reading of the "
                "Dockerfile is not checked"
            )


def _is_as(word: str) -> bool:
    """strings.EqualFold(word, "as"): U+017F (long s) folds to s."""
    return len(word) == 2 and word[0] in "aA" and word[1] in "sS\u017f"


def _meta_arg(instruction: Instruction, escape: str, lookup: _Lookup) -> dict[str, _Value | None]:
    """The meta ARGs one ARG instruction declares (all its values are expanded with the
    ARGs before it). Values are read lazily: an unreadable one is an error where used."""
    line = instruction.line
    _, rest = _flags(instruction.arguments)  # ARG ignores flags
    words = _words(rest, escape)
    if not words:
        raise DockerfileError(f"ARG on line {line} without a name")
    declared: dict[str, _Value | None] = {}
    for word in words:
        key, equals, raw = word.partition("=")
        if not key:
            raise DockerfileError(f"ARG on line {line} with a blank name")
        if not key.isascii() or any(c in key for c in ("$", "'", '"', "\\", "`", escape)):
            raise DockerfileError(f"ARG on line {line}: the name {key[:60]!r} is not read")
        if not equals:
            declared[key] = None
            continue
        try:
            declared[key] = _expand(raw, lookup, quotes=True, what=f"ARG {key} on line {line}")
        except DockerfileError as error:
            declared[key] = _Unreadable(str(error))
    return declared


def _words(rest: str, escape: str) -> list[str]:
    """BuildKit's parseWords (ARG): blank-separated words, quotes and escapes kept."""
    words: list[str] = []
    word: list[str] = []
    in_word = False
    quote = ""
    blank_ok = False
    pos = 0
    while pos < len(rest):
        char = rest[pos]
        if quote:
            if char == quote:
                quote = ""
            elif char == escape and quote != "'":
                if pos + 1 == len(rest):
                    quote = ""
                    pos += 1
                    continue  # an escape at the end is dropped
                word.append(char)
                pos += 1
                char = rest[pos]
            word.append(char)
            pos += 1
            continue
        if not in_word:
            if _go_space(char):
                pos += 1
                continue
            in_word = True
        if _go_space(char):
            if blank_ok or word:
                words.append("".join(word))
            word, blank_ok, in_word = [], False, False
            pos += 1
            continue
        if char in "'\"":
            quote, blank_ok = char, True
        elif char == escape:
            if pos + 1 == len(rest):
                pos += 1
                continue  # an escape at the end is dropped
            word.append(char)
            pos += 1
            char = rest[pos]
        word.append(char)
        pos += 1
    if (in_word or quote) and (blank_ok or word):
        words.append("".join(word))
    return words


def _expand(word: str, lookup: _Lookup, *, quotes: bool, what: str) -> str:
    """`word` as BuildKit's shell lexer expands it, in the subset modelled: literal
    characters, $NAME, ${NAME}, ${NAME:-word}, ${NAME-word}, ${NAME:+word}, ${NAME+word}
    (word literal); with `quotes`, also '...' and "..." holding no `$` or escape.
    Anything else, or a variable not set (which the builder reads as empty), raises."""
    if not word.isascii():
        raise DockerfileError(f"{what}: non-ASCII characters in {word[:80]!r}")
    out: list[str] = []
    pos = 0
    while pos < len(word):
        char = word[pos]
        if char == "$":
            value, pos = _dollar(word, pos, lookup, what)
            out.append(value)
        elif char in "'\"" and quotes:
            end = word.find(char, pos + 1)
            inner = word[pos + 1 : end]
            if end < 0 or (char == '"' and any(c in inner for c in "$\\`")):
                raise DockerfileError(f"{what}: the quoting in {word[:80]!r} is not read")
            out.append(inner)
            pos = end + 1
        elif char in "'\"\\`":
            raise DockerfileError(f"{what}: quotes or escapes in {word[:80]!r} are not read")
        else:
            out.append(char)
            pos += 1
    return "".join(out)


def _dollar(word: str, pos: int, lookup: _Lookup, what: str) -> tuple[str, int]:
    """The value of the expansion at word[pos] == "$", and where it ends."""
    unread = DockerfileError(f"{what}: the expansion in {word[:80]!r} is not read")
    if not word.startswith("{", pos + 1):
        match = _VARIABLE.match(word, pos + 1)
        if match is None:
            raise unread
        return _value(match.group(), lookup, what), match.end()
    match = _VARIABLE.match(word, pos + 2)
    if match is None:
        raise unread
    name, pos = match.group(), match.end()
    if word.startswith("}", pos):
        return _value(name, lookup, what), pos + 1
    colon = word.startswith(":", pos)
    pos += colon
    if not word.startswith(("-", "+"), pos):
        raise unread
    operator = word[pos]
    end = word.find("}", pos + 1)
    alternative = word[pos + 1 : end]
    if end < 0 or any(c in _NOT_LITERAL or c in _ASCII_BLANKS for c in alternative):
        raise unread
    is_set, value = lookup(name)
    if isinstance(value, _Unreadable):
        raise DockerfileError(f"{what}: ${name} is not read ({value.reason})")
    empty = not is_set or (colon and value == "")
    if operator == "-":
        return (alternative if empty else value), end + 1
    return ("" if empty else alternative), end + 1


def _value(name: str, lookup: _Lookup, what: str) -> str:
    is_set, value = lookup(name)
    if not is_set:
        raise DockerfileError(
            f"{what}: ${name} is not set (no ARG default before the first FROM, no build arg)"
        )
    if isinstance(value, _Unreadable):
        raise DockerfileError(f"{what}: ${name} is not read ({value.reason})")
    return value


# --- what a classic build downloads ------------------------------------------------------
#
# The classic builder's ADD downloads a source that starts with `http://` or `https://`
# (moby's urlutil.IsURL), from the daemon, wherever it points: the host's loopback
# included. Sources are expanded with the build's ARG and ENV values first, so a source
# with `$` could become a URL: not read, refused. JSON form (`ADD ["a", "b"]`) and shell
# form (blank-separated words) are read; quotes in the shell form are refused.

_URL_PREFIXES: Final = ("http://", "https://")
_GIT_PREFIXES: Final = ("git@", "git://", "ssh://")


def fetched_urls(text: str, *, buildkit: bool = False) -> list[ImageSource]:
    """Every URL a classic build of `text` makes the daemon download (ADD and ONBUILD
    ADD), as (url, where). Raises DockerfileError for a source not read confidently.

    `buildkit`: BuildKit's ADD also clones git remotes (`git@host:repo`, `git://`,
    `ssh://`), from the daemon, over SSH: refused, not modelled. As for images, both
    readings (heredocs read, and not)."""
    out: list[ImageSource] = []
    for heredocs in (True, False) if buildkit else (False,):
        for url in _fetched_urls(*parse(text, heredocs=heredocs), buildkit=buildkit):
            if url not in out:
                out.append(url)
    return out


def _fetched_urls(
    instructions: list[Instruction], escape: str, *, buildkit: bool
) -> list[ImageSource]:
    out: list[ImageSource] = []
    for instruction in instructions:
        keyword, arguments, where = instruction.keyword, instruction.arguments, "ADD"
        if keyword == "ONBUILD":
            inner = _instruction(_flags(arguments)[1], instruction.line)
            keyword, arguments, where = inner.keyword, inner.arguments, "ONBUILD ADD"
        if keyword != "ADD":
            continue
        words = _add_words(_flags(arguments)[1], escape, instruction.line)
        for source in words[:-1]:
            if source.startswith(_URL_PREFIXES):
                out.append(ImageSource(source, f"{where} on line {instruction.line}"))
            elif buildkit and source.startswith(_GIT_PREFIXES):
                raise DockerfileError(
                    f"{where} on line {instruction.line}: {source[:80]!r} is a git remote "
                    "the daemon would clone; not read"
                )
    return out


def _add_words(rest: str, escape: str, line: int) -> list[str]:
    stripped = rest.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except ValueError:
            value = None  # not JSON: the builder reads it as the shell form
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            words: list[str] = value
        else:
            words = stripped.split()
    else:
        if any(char in stripped for char in ("'", '"', escape)):
            raise DockerfileError(f"ADD on line {line}: quotes or escapes in its sources")
        words = stripped.split()
    if any("$" in word for word in words[:-1]):
        raise DockerfileError(
            f"ADD on line {line}: a source with a variable could be a URL the daemon "
            "downloads; name it literally (or use COPY for files of the context)"
        )
    return words
