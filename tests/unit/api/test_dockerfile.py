"""Dockerfile text as the builder's parser reads it (commit and import `changes`, and the
images a classic build resolves)."""

from __future__ import annotations

import contextlib
import re
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.api.dockerfile import (
    DockerfileError,
    ImageSource,
    Instruction,
    changes,
    fetched_urls,
    image_sources,
    needs_expansion,
    parse,
)
from dockmoat.api.request import ApiRequest, ClientIdentity
from dockmoat.api.routing import route_path
from dockmoat.policy.decision import Deny
from dockmoat.policy.engine import load_policy

POLICY = load_policy("baseline", env={})


def test_continuations_join_lines() -> None:
    instructions, escape = parse("WORKDIR /pro\\\nc/self/fd/8\nCMD x")
    assert escape == "\\"
    assert instructions[0] == Instruction("WORKDIR", "/proc/self/fd/8", 1)
    assert instructions[1].keyword == "CMD"


def test_the_escape_directive_changes_the_continuation_character() -> None:
    instructions, escape = parse("# escape=`\nWORKDIR /pro`\nc/self/fd/8")
    assert escape == "`"
    assert [(i.keyword, i.arguments) for i in instructions] == [("WORKDIR", "/proc/self/fd/8")]
    # after an instruction, the same line is a comment, not a directive
    instructions, escape = parse("CMD x\n# escape=`\nWORKDIR /a`\nb")
    assert escape == "\\"
    assert [i.keyword for i in instructions] == ["CMD", "WORKDIR", "B"]


def test_comments_and_blank_lines_inside_a_continuation_are_skipped() -> None:
    instructions, _ = parse("WORKDIR /pr\\\n# a comment\n\noc/1")
    assert [(i.keyword, i.arguments) for i in instructions] == [("WORKDIR", "/proc/1")]


def test_keywords_are_case_insensitive_and_split_on_tabs() -> None:
    instructions, _ = changes(["workdir\t/srv", "On\\", "Build RUN x"])
    assert [(i.keyword, i.arguments) for i in instructions] == [
        ("WORKDIR", "/srv"),
        ("ONBUILD", "RUN x"),
    ]


def test_bad_directives_are_errors() -> None:
    with pytest.raises(DockerfileError):
        parse("# escape=x\nCMD y")
    with pytest.raises(DockerfileError):
        parse("# escape=`\n# escape=\\\nCMD y")


def test_values_the_builder_could_expand() -> None:
    assert needs_expansion("$HOME", "\\")
    assert needs_expansion('"/proc"', "\\")
    assert needs_expansion("/pr`oc", "`")
    assert not needs_expansion("/srv/app", "\\")


@given(st.text(alphabet=st.sampled_from(list("WORKDIRwd /proc\\`#=\n\t$'\"a")), max_size=80))
def test_parser_never_fails_unexpectedly(text: str) -> None:
    try:
        instructions, escape = parse(text)
    except DockerfileError:
        return
    assert escape in ("\\", "`")
    for instruction in instructions:
        assert instruction.keyword == instruction.keyword.upper()
        assert "\n" not in instruction.arguments


@given(st.sampled_from(["/proc/self/fd/8", "/proc", "/x/../proc/1"]), st.integers(1, 6))
def test_a_proc_workdir_split_anywhere_is_refused(path: str, cut: int) -> None:
    cut = min(cut, len(path) - 1)
    value = f"WORKDIR {path[:cut]}\\\n{path[cut:]}"
    target = f"/v1.41/commit?container=x&changes={quote(value)}"
    routed, version, route = route_path("POST", target.split("?", 1)[0])
    request = ApiRequest(
        "POST", target, routed, version, route, {"container": ["x"], "changes": [value]},
        (), ClientIdentity(listener="unix:///t.sock"),
    )  # fmt: skip
    decision = POLICY.evaluate(request)
    assert isinstance(decision, Deny) and decision.rule == "containers.proc-workdir"


# --- parser details as BuildKit reads them -----------------------------------------


def test_an_escaped_escape_at_the_end_of_a_line_does_not_continue_it() -> None:
    instructions, _ = parse("FROM a\nRUN echo \\\\\nFROM evil\n")
    assert [(i.keyword, i.arguments) for i in instructions] == [
        ("FROM", "a"),
        ("RUN", "echo \\\\"),
        ("FROM", "evil"),
    ]


def test_keywords_split_at_any_ascii_blank_and_fold_as_go_does() -> None:
    instructions, _ = parse("FROM\x0balpine\nWORKD\u0130R /proc\nCOPY\x0c--from=x a b")
    assert [(i.keyword, i.arguments) for i in instructions] == [
        ("FROM", "alpine"),
        ("WORKDIR", "/proc"),  # Go's strings.ToLower maps U+0130 to i
        ("COPY", "--from=x a b"),
    ]


def test_a_bom_is_dropped_and_crlf_read_as_newlines() -> None:
    instructions, escape = parse("\ufeff# escape=`\r\nFROM alp`\r\nine\r\n")
    assert escape == "`"
    assert [(i.keyword, i.arguments, i.line) for i in instructions] == [("FROM", "alpine", 2)]


@pytest.mark.parametrize(
    "text",
    [
        "FROM a\\\r\r\nFROM b",  # one carriage return dropped by old engines, all by new ones
        "# check=skip=all\n# escape=`\nFROM a",  # `check` is a directive since BuildKit 0.15
        "#\u00a0escape=`\nFROM a",  # Unicode blanks after `#`: only newer engines
    ],
)
def test_text_engines_read_differently_is_refused(text: str) -> None:
    with pytest.raises(DockerfileError):
        parse(text)


def test_an_unknown_directive_ends_the_directives() -> None:
    _, escape = parse("# foo=bar\n# escape=`\nFROM a")
    assert escape == "\\"
    _, escape = parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM a")
    assert escape == "`"


# --- image_sources: the images a classic build resolves -------------------------


def sources(text: str, build_args: dict[str, str | None] | None = None) -> list[tuple[str, str]]:
    return [(s.ref, s.where) for s in image_sources(text, build_args or {})]


@pytest.mark.parametrize(
    ("text", "build_args", "expected"),
    [
        # meta ARG defaults, overrides, undeclared build args
        ("ARG V=3.19\nFROM alpine:$V", {}, ["alpine:3.19"]),
        ("ARG V=3.19\nFROM alpine:${V}", {"V": "3.20"}, ["alpine:3.20"]),
        ("ARG V=3.19\nFROM alpine:$V", {"V": None}, ["alpine:3.19"]),
        ("ARG V\nFROM alpine:$V", {"V": "3.20"}, ["alpine:3.20"]),
        ("ARG A=x B=y\nARG C\nFROM $A/$B:${C:-1}", {"X": "z"}, ["x/y:1"]),
        ("FROM ${V:-alpine}", {"V": "evil"}, ["alpine"]),  # not declared: no effect
        ("ARG V='alpine:1' W=\"busybox\"\nFROM $V\nFROM $W", {}, ["alpine:1", "busybox"]),
        ("ARG R=reg:5000/\nARG I=${R}app\nFROM $I", {}, ["reg:5000/app"]),
        ("ARG V=a\nARG V\nFROM ${V:-b}", {}, ["b"]),  # redeclared without a default: unset
        ("ARG --x V=a\nFROM $V", {}, ["a"]),  # ARG ignores flags
        # the proxy build args are visible without an ARG
        ("FROM ${HTTP_PROXY:-alpine}", {"HTTP_PROXY": "evil"}, ["evil"]),
        # the modifiers
        ("ARG V\nFROM ${V:-alpine}", {}, ["alpine"]),
        ("ARG V=\nFROM ${V:-alpine}", {}, ["alpine"]),
        ("ARG V=\nFROM a${V-alpine}", {}, ["a"]),
        ("ARG V\nFROM a${V-b}", {}, ["ab"]),
        ("ARG V=x\nFROM a${V:+b}", {}, ["ab"]),
        ("ARG V=\nFROM a${V:+b}", {}, ["a"]),
        ("ARG V=\nFROM a${V+b}", {}, ["ab"]),
        ("ARG V\nFROM a${V+b}", {}, ["a"]),
        # stages: case-insensitive names, only earlier stages, scratch
        ("FROM alpine AS Build\nFROM BUILD\nFROM build", {}, ["alpine"]),
        ("FROM later\nFROM alpine AS later", {}, ["later", "alpine"]),
        ("FROM alpine AS me\nCOPY --from=me / /", {}, ["alpine", "me"]),  # its own name
        ("FROM scratch\nFROM Scratch AS s\nFROM s", {}, []),
        ("FROM 0\nFROM alpine", {}, ["0", "alpine"]),  # FROM takes no stage index
        ("FROM alpine a\u017f b\nFROM B", {}, ["alpine"]),  # `AS` as Go's EqualFold reads it
        # COPY --from: stage names, stage indexes, images; never expanded
        ("FROM a AS b\nFROM c\nCOPY --from=B / /\nCOPY --from=0 / /", {}, ["a", "c"]),
        ("FROM a\nFROM c\nCOPY --chown=1 --from=busybox:1 / /", {}, ["a", "c", "busybox:1"]),
        ("FROM a\nCOPY --link --from=scratch / /", {}, ["a", "scratch"]),
        ("FROM a\nCOPY --from= / /\nCOPY -- --from=x /", {}, ["a"]),
        ("FROM a\nCOPY --from=99999999999999999999 / /", {}, ["a", "99999999999999999999"]),
        ("FROM a AS b\nCOPY a --from=x /", {}, ["a"]),  # flags come first
        # ONBUILD COPY --from: listed (the trigger runs in a later build)
        ("FROM a AS b\nONBUILD COPY --from=b / /", {}, ["a", "b"]),
        ("FROM a\nONBUILD COPY --from=0 / /\nONBUILD RUN x", {}, ["a"]),
        # continuations and the escape directive inside FROM lines
        ("FROM alp\\\nine:3\\\n# comment\n\n.19 A\\\nS b", {}, ["alpine:3.19"]),
        ("# escape=`\nFROM alp`\nine AS b`\nuild\nFROM build", {}, ["alpine"]),
        ("\ufeffFROM --platform=$BUILDPLATFORM alpine", {}, ["alpine"]),
        # a meta ARG that is not read is an error only where used
        ('ARG V="$X" W=a\nFROM $W', {}, ["a"]),
    ],
)
def test_image_sources(text: str, build_args: dict[str, str | None], expected: list[str]) -> None:
    assert [ref for ref, _ in sources(text, build_args)] == expected


def test_where_names_the_instruction_and_its_line() -> None:
    text = "ARG V=1\n\nFROM a:$V AS b\nCOPY --from=c / /\nONBUILD COPY --from=d / /\n"
    assert sources(text) == [
        ("a:1", "FROM on line 3"),
        ("c", "COPY --from on line 4"),
        ("d", "ONBUILD COPY --from on line 5"),
    ]


@pytest.mark.parametrize(
    ("text", "build_args", "message"),
    [
        ("FROM $V", {}, "not set"),
        ("ARG V\nFROM $V", {}, "not set"),
        ("FROM ${UNDECLARED}", {"UNDECLARED": "x"}, "not set"),
        ("ARG V=$W\nFROM $V", {}, "not read"),
        ('FROM "alpine"', {}, "quotes"),
        ("FROM 'alpine'", {}, "quotes"),
        ("FROM al\\pine", {}, "escapes"),
        ('ARG V="a$W"\nFROM $V', {}, "quoting"),
        ("ARG V=x\nFROM ${V:?no}", {}, "expansion"),
        ("ARG V=x\nFROM ${V#x}", {}, "expansion"),
        ("ARG V=x\nFROM ${V:-$V}", {}, "expansion"),
        ("FROM $1", {}, "expansion"),
        ("ARG V=\nFROM $V", {}, "empty"),
        ("ARG V\nFROM $V", {"V": "a b"}, "not an image reference"),
        ('FROM ["alpine"]', {}, "quotes"),
        ("FROM alpine AS b c", {}, "FROM takes"),
        ("FROM alpine b", {}, "FROM takes"),
        ("FROM alpine AS 1b", {}, "invalid stage name"),
        ("FROM a AS b\nFROM c AS B", {}, "used twice"),
        ("FROM a\nCOPY --from x / /", {}, "without a value"),
        ("FROM a\nCOPY --from=x --from=y / /", {}, "twice"),
        ('FROM a\nCOPY --from="x" / /', {}, "quotes"),
        ("ARG V=x\nFROM a\nCOPY --from=$V / /", {}, "does not expand"),
        ("FROM a\nCOPY --from=0 / /", {}, "no earlier stage"),
        ("FROM a\nFROM b\nCOPY --from=-1 / /", {}, "no earlier stage"),
        ("FROM a\nADD --from=x / /", {}, "ADD --from"),
        ("FROM a\nONBUILD FROM b", {}, "not allowed"),
        ("FROM a\nONBUILD ONBUILD RUN x", {}, "not allowed"),
        ("FROM a\nONBUILD MAINTAINER me", {}, "not allowed"),
        ("FROM a\nONBUILD COPY --from=$V / /", {}, "does not expand"),
        ("FROM a\nRUN <<EOF\nFROM evil\nEOF", {}, "heredocs are not read"),
        ("FROM a\nCOPY <<-EOF /x\nFROM evil\nEOF", {}, "heredocs are not read"),
        ('FROM a\nRUN <<"EOF"\nx\nEOF', {}, "heredocs are not read"),
        ("FROM a\nONBUILD RUN <<EOF\nx\nEOF", {}, "heredocs are not read"),
        ("", {}, "no FROM"),
        ("ARG V=1\n# only a comment", {}, "no FROM"),
        ("RUN x\nFROM a", {}, "before the first FROM"),
        ("ENV A=b\nFROM a", {}, "before the first FROM"),
        ("FROM a\nFOO bar", {}, "unknown instruction"),
        ("FROM\u00a0alpine", {}, "unknown instruction"),
        ("ARG $V=x\nFROM a", {}, "is not read"),
    ],
)
def test_what_is_not_read_confidently_is_refused(
    text: str, build_args: dict[str, str | None], message: str
) -> None:
    with pytest.raises(DockerfileError, match=re.escape(message)):
        image_sources(text, build_args)


DOCKERFILE_CHARS = list(
    "FROMCPYAGSNBUILDfromas-=${}:+_.\\`#'\"<0123 \t\n\r\x0bxyz\u0130\u00a0\ufeff"
)


@given(st.text(alphabet=st.sampled_from(DOCKERFILE_CHARS), max_size=120))
def test_image_sources_either_reads_or_refuses(text: str) -> None:
    try:
        found = image_sources(text, {"x": "y", "V": None})
    except DockerfileError:
        return
    assert all(isinstance(s, ImageSource) and s.ref for s in found)


@given(st.text(max_size=200), st.dictionaries(st.text(max_size=5), st.none() | st.text(max_size=5)))
def test_image_sources_on_any_text_reads_or_refuses(
    text: str, build_args: dict[str, str | None]
) -> None:
    for candidate in (text, "FROM a\n" + text, "ARG V=x\nFROM $V\n" + text):
        try:
            found = image_sources(candidate, build_args)
        except DockerfileError:
            continue
        assert all(source.ref and source.where for source in found)


STAGE_NAMES = st.from_regex(r"[a-z][a-z0-9_.-]{0,6}", fullmatch=True)
IMAGES = st.from_regex(r"[a-z][a-z0-9]{0,5}(/[a-z0-9]{1,4})?(:[a-z0-9.]{1,4})?", fullmatch=True)


@st.composite
def simple_dockerfiles(draw: st.DrawFn) -> tuple[str, dict[str, str | None], list[str]]:
    """(Dockerfile, build args, the images it resolves) from stages with random names."""
    lines: list[str] = []
    build_args: dict[str, str | None] = {}
    expected: list[str] = []
    if draw(st.booleans()):
        default, given = draw(IMAGES), draw(st.none() | IMAGES)
        lines.append(f"ARG BASE={default}")
        build_args["BASE"] = given
        base: str | None = given or default
    else:
        base = None
    names: list[str] = []  # of the named stages so far
    for index in range(draw(st.integers(1, 5))):
        name = draw(STAGE_NAMES.filter(lambda n: n not in names and n != "scratch"))
        kind = draw(st.sampled_from(["image", "stage", "arg", "scratch", "later"]))
        if kind == "stage" and names:
            word = draw(st.sampled_from(names))
            word = draw(st.sampled_from([word, word.upper()]))
        elif kind == "arg" and base is not None:
            word = draw(st.sampled_from(["$BASE", "${BASE}", "${BASE:-x}", "${BASE-x}"]))
            expected.append(base)
        elif kind == "scratch":
            word = draw(st.sampled_from(["scratch", "SCRATCH"]))
        else:
            word = draw(IMAGES.filter(lambda i: i not in names and i != "scratch"))
            expected.append(word)
        lines.append(f"FROM {word} AS {name}" if draw(st.booleans()) else f"FROM {word}")
        named = lines[-1].endswith(f" AS {name}")
        for _ in range(draw(st.integers(0, 2))):
            choice = draw(st.sampled_from(["index", "name", "image", "none"]))
            if choice == "index" and index > 0:
                lines.append(f"COPY --from={draw(st.integers(0, index - 1))} /a /b")
            elif choice == "name" and names:
                lines.append(f"COPY --from={draw(st.sampled_from(names)).upper()} /a /b")
            elif choice == "image":
                image = draw(IMAGES.filter(lambda i: i not in names))
                lines.append(f"COPY --link --from={image} /a /b")
                expected.append(image)
            else:
                lines.append("RUN true")
        if named:
            names.append(name)
    return "\n".join(lines) + "\n", build_args, expected


@given(simple_dockerfiles())
def test_generated_dockerfiles_give_their_images(
    case: tuple[str, dict[str, str | None], list[str]],
) -> None:
    text, build_args, expected = case
    assert [s.ref for s in image_sources(text, build_args)] == expected


# --- fetched_urls: what ADD makes the daemon download ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "FROM a\nADD http://127.0.0.1:5000/x /x\n",
            [("http://127.0.0.1:5000/x", "ADD on line 2")],
        ),
        (
            "FROM a\nADD --chown=1:1 https://h/a https://h/b /d/\n",
            [("https://h/a", "ADD on line 2"), ("https://h/b", "ADD on line 2")],
        ),
        ('FROM a\nADD ["https://h/a", "/x"]\n', [("https://h/a", "ADD on line 2")]),
        ("FROM a\nONBUILD ADD http://h/a /a\n", [("http://h/a", "ONBUILD ADD on line 2")]),
        ("FROM a\nADD \\\n  http://h/a /a\n", [("http://h/a", "ADD on line 2")]),
        ("FROM a\nADD file.tar /x\nCOPY http://h/a /a\n", []),
        ("FROM a\nADD HTTP://h/a /a\n", []),  # not a URL to moby's IsURL: a context path
    ],
)
def test_add_urls_are_listed(text: str, expected: list[tuple[str, str]]) -> None:
    assert [(u.ref, u.where) for u in fetched_urls(text)] == expected


@pytest.mark.parametrize(
    "text",
    [
        "FROM a\nARG U=http://h/a\nADD $U /a\n",
        "FROM a\nADD ${U:-http://h/a} /a\n",
        'FROM a\nADD "http://h/a" /a\n',
    ],
)
def test_add_sources_that_could_become_urls_are_refused(text: str) -> None:
    with pytest.raises(DockerfileError):
        fetched_urls(text)


@given(st.text(max_size=300))
def test_fetched_urls_never_raises_anything_else(text: str) -> None:
    with contextlib.suppress(DockerfileError):
        fetched_urls(text)


# --- the reading of dockerd's built-in BuildKit frontend (/build?version=2) ---------------


def bk(text: str, build_args: dict[str, str | None] | None = None) -> list[str]:
    return [s.ref for s in image_sources(text, build_args or {}, buildkit=True)]


def test_run_mounts_from_images_are_sources_and_from_stages_are_not() -> None:
    text = (
        "FROM a AS build\n"
        "FROM a\n"
        "RUN --mount=type=bind,from=build,target=/b --mount=type=cache,target=/c true\n"
        "RUN --mount=type=bind,FROM=other:1,target=/o true\n"
        "ONBUILD RUN --mount=from=trig,target=/t true\n"
    )
    assert bk(text) == ["a", "a", "other:1", "trig"]
    assert [s.ref for s in image_sources(text, {})] == ["a", "a", "other:1", "trig"]


@pytest.mark.parametrize(
    "text",
    [
        "FROM a\nRUN --mount=from=$IMG,target=/x true\n",
        "FROM a\nRUN --mount=from=b,from=c,target=/x true\n",
    ],
)
def test_mounts_not_read_confidently_are_refused(text: str) -> None:
    with pytest.raises(DockerfileError):
        bk(text)


def test_heredoc_lines_are_read_both_ways() -> None:
    # 23.0 on: the heredoc's lines are a script; 20.10: they are instructions.
    text = "FROM a\nRUN <<EOT\nFROM hidden\nEOT\nCOPY <<-'EOF' /x\n\tFROM tabbed\n\tEOF\n"
    assert bk(text) == ["a", "hidden", "tabbed"]
    with pytest.raises(DockerfileError, match="heredocs are not read"):
        image_sources(text, {})  # the classic builder's reading refuses them


@pytest.mark.parametrize(
    ("text", "args", "reason"),
    [
        ("# syntax=docker/dockerfile:1\nFROM a\n", {}, "custom frontend"),
        ("#   SYNTAX = x\nFROM a\n", {}, "custom frontend"),
        ("FROM a\n", {"BUILDKIT_SYNTAX": "x"}, "custom frontend"),
        ("FROM a:$TARGETARCH\n", {}, "daemon's platform"),
        ("ARG TARGETOS=linux\nFROM a-$TARGETOS\n", {}, "daemon's platform"),
        ("FROM a\nRUN <<EOT\nnever ends\n", {}, "unterminated"),
        ("FROM a\nRUN cat <<< x\n", {}, "not a plain heredoc"),
        ("FROM a\nRUN echo $((1<<2))\n", {}, "not a plain heredoc"),
    ],
)
def test_what_the_buildkit_reading_cannot_confirm_is_refused(
    text: str, args: dict[str, str | None], reason: str
) -> None:
    with pytest.raises(DockerfileError, match=reason):
        bk(text, args)


def test_buildkit_add_of_a_git_remote_is_refused() -> None:
    with pytest.raises(DockerfileError, match="git remote"):
        fetched_urls("FROM a\nADD git@127.0.0.1:repo /src\n", buildkit=True)
    assert fetched_urls("FROM a\nADD git@127.0.0.1:repo /src\n") == []  # a local path there


@given(st.text(alphabet=st.sampled_from(list("FROMRUNCPY <-'\"EOT\n\t$abc=,/")), max_size=80))
def test_the_buildkit_reading_reads_or_refuses(text: str) -> None:
    try:
        bk(text)
        fetched_urls(text, buildkit=True)
    except DockerfileError:
        pass
