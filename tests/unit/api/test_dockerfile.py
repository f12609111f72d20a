"""Dockerfile text as the builder's parser reads it (commit and import `changes`)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.api.dockerfile import DockerfileError, Instruction, changes, needs_expansion, parse
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
