"""The CAP_SYS_RESOURCE runtime wrapper, run as the installed executable on real files.

Only `runc` is a stub here (on PATH, recording its argv and the spec it was
given); the real runc behind the wrapper is exercised by the engine tests.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import oci_runtime_wrapper as w
from harness.runtime_workaround import EDITOR_NAME, install_wrapper, system_python

CAPS = ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_NET_ADMIN"]
WITHOUT = [c for c in CAPS if c != "CAP_SYS_RESOURCE"]

RUNC_STUB = """#!/bin/sh
# Records how it was called, and the spec files as runc would read them.
printf '%s\\n' "$@" > "$CAPTURE/argv"
for f in "$CAPTURE"/watch/*; do [ -e "$f" ] && cp "$f" "$CAPTURE/seen-$(basename "$f")"; done
exit "${RUNC_STATUS:-0}"
"""


@pytest.fixture
def wrapper(tmp_path: Path) -> Path:
    directory = tmp_path / "libexec"
    assert install_wrapper(directory, system_python())
    assert not install_wrapper(directory, system_python()), "a second install changes nothing"
    return directory / "runc-wrapper"


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    directory = tmp_path / "capture"
    (directory / "watch").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "runc"
    stub.write_text(RUNC_STUB)
    stub.chmod(0o755)
    return directory


def spec(caps: list[str]) -> dict[str, object]:
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "args": ["sh"],
            "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")}
            | {"inheritable": list(caps)},
        },
        "root": {"path": "rootfs"},
    }


def run(
    wrapper: Path, capture: Path, args: list[str], cwd: Path, status: int = 0
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{capture.parent / 'bin'}:/usr/bin:/bin",
        "CAPTURE": str(capture),
        "RUNC_STATUS": str(status),
    }
    return subprocess.run(
        [str(wrapper), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=30
    )


def argv_seen(capture: Path) -> list[str]:
    return (capture / "argv").read_text().splitlines()


def caps_in(path: Path, in_process: bool = False) -> list[list[str]]:
    doc = json.loads(path.read_text())
    process = doc if in_process else doc["process"]
    return list(process["capabilities"].values())


def write_bundle(tmp_path: Path, caps: list[str]) -> Path:
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "config.json").write_text(json.dumps(spec(caps), indent=1))
    return bundle


@pytest.mark.parametrize(
    "form", [["--bundle", "{b}"], ["-b", "{b}"], ["--bundle={b}"]], ids=["long", "short", "equals"]
)
def test_create_drops_the_capability_from_every_list(
    wrapper: Path, capture: Path, tmp_path: Path, form: list[str]
) -> None:
    bundle = write_bundle(tmp_path, CAPS)
    bundle_args = [a.format(b=bundle) for a in form]
    args = ["--root", "/run/x", "--log", "/tmp/l", "--log-format", "json", "--systemd-cgroup"]
    args += ["create", *bundle_args, "--pid-file", "/tmp/p", "ctr1"]

    result = run(wrapper, capture, args, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert caps_in(bundle / "config.json") == [WITHOUT] * 4
    assert argv_seen(capture) == args, "runc gets the original argv, untouched"


def test_create_without_bundle_uses_the_working_directory(
    wrapper: Path, capture: Path, tmp_path: Path
) -> None:
    bundle = write_bundle(tmp_path, CAPS)
    result = run(wrapper, capture, ["create", "ctr1"], cwd=bundle)
    assert result.returncode == 0, result.stderr
    assert caps_in(bundle / "config.json") == [WITHOUT] * 4


def test_run_is_edited_like_create(wrapper: Path, capture: Path, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, CAPS)
    run(wrapper, capture, ["run", "-b", str(bundle), "ctr1"], cwd=tmp_path)
    assert caps_in(bundle / "config.json") == [WITHOUT] * 4


@pytest.mark.parametrize("flag", ["--process", "-p"])
def test_exec_edits_the_process_file(
    wrapper: Path, capture: Path, tmp_path: Path, flag: str
) -> None:
    process = tmp_path / "process.json"
    process.write_text(json.dumps(spec(CAPS)["process"]))
    args = ["--root", "/run/x", "exec", flag, str(process), "--detach", "ctr1"]

    result = run(wrapper, capture, args, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert caps_in(process, in_process=True) == [WITHOUT] * 4
    assert argv_seen(capture) == args


def test_runc_sees_the_edited_spec(wrapper: Path, capture: Path, tmp_path: Path) -> None:
    """The edit is complete before runc starts (runc reads the file, not our memory)."""
    bundle = write_bundle(tmp_path, CAPS)
    (capture / "watch" / "config.json").symlink_to(bundle / "config.json")
    run(wrapper, capture, ["create", "--bundle", str(bundle), "c"], cwd=tmp_path)
    assert caps_in(capture / "seen-config.json") == [WITHOUT] * 4


def test_a_spec_without_the_capability_is_not_rewritten(
    wrapper: Path, capture: Path, tmp_path: Path
) -> None:
    bundle = write_bundle(tmp_path, WITHOUT)
    before = (bundle / "config.json").read_bytes()
    inode = (bundle / "config.json").stat().st_ino
    run(wrapper, capture, ["create", "--bundle", str(bundle), "c"], cwd=tmp_path)
    assert (bundle / "config.json").read_bytes() == before
    assert (bundle / "config.json").stat().st_ino == inode


@pytest.mark.parametrize("command", ["start", "delete", "state", "kill", "features"])
def test_other_commands_pass_through(
    wrapper: Path, capture: Path, tmp_path: Path, command: str
) -> None:
    bundle = write_bundle(tmp_path, CAPS)
    before = (bundle / "config.json").read_bytes()
    args = ["--root", "/run/x", command, "ctr1"]
    run(wrapper, capture, args, cwd=bundle)
    assert argv_seen(capture) == args
    assert (bundle / "config.json").read_bytes() == before


def test_runc_exit_status_is_the_wrappers(wrapper: Path, capture: Path, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, CAPS)
    result = run(wrapper, capture, ["create", "-b", str(bundle), "c"], cwd=tmp_path, status=7)
    assert result.returncode == 7


def test_unreadable_spec_still_reaches_runc_unchanged(
    wrapper: Path, capture: Path, tmp_path: Path
) -> None:
    """A spec we cannot parse is runc's to reject; the wrapper must not hide runc's error."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    broken = b'{"process": {"capabilities": ["CAP_SYS_RESOURCE"'
    (bundle / "config.json").write_bytes(broken)
    result = run(wrapper, capture, ["create", "-b", str(bundle), "c"], cwd=tmp_path, status=1)
    assert result.returncode == 1
    assert "could not edit spec" in result.stderr
    assert (bundle / "config.json").read_bytes() == broken
    assert argv_seen(capture) == ["create", "-b", str(bundle), "c"]


def test_missing_bundle_still_reaches_runc(wrapper: Path, capture: Path, tmp_path: Path) -> None:
    result = run(wrapper, capture, ["create", "-b", str(tmp_path / "nope"), "c"], cwd=tmp_path)
    assert result.returncode == 0
    assert argv_seen(capture)[0] == "create"


def test_installed_editor_is_isolated_and_executable(wrapper: Path) -> None:
    editor = wrapper.with_name(EDITOR_NAME)
    assert editor.read_text().splitlines()[0] == f"#!{system_python()} -IS"
    assert os.access(editor, os.X_OK) and os.access(wrapper, os.X_OK)


def replace_editor_with_tracer(wrapper: Path, capture: Path) -> None:
    """The front end must not start Python when it can tell there is nothing to edit."""
    editor = wrapper.with_name(EDITOR_NAME)
    editor.write_text(
        "import os, sys\n"
        f"open({str(capture / 'editor-ran')!r}, 'w').close()\n"
        "os.execvp('runc', ['runc', *sys.argv[1:]])\n"
    )


@pytest.mark.parametrize("command", ["create", "state", "delete", "start"])
def test_front_end_skips_python_when_nothing_to_edit(
    wrapper: Path, capture: Path, tmp_path: Path, command: str
) -> None:
    bundle = write_bundle(tmp_path, WITHOUT)
    replace_editor_with_tracer(wrapper, capture)
    args = ["--root", "/r", command, "--bundle", str(bundle), "c"]
    assert run(wrapper, capture, args, cwd=tmp_path).returncode == 0
    assert argv_seen(capture) == args
    assert not (capture / "editor-ran").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["create", "--bundle", "{b}", "c"],
        ["create", "--bundle", "{b}/missing", "c"],  # unsure: the editor decides
        ["exec", "c"],  # no --process: unsure
    ],
)
def test_front_end_hands_over_when_the_spec_may_need_editing(
    wrapper: Path, capture: Path, tmp_path: Path, args: list[str]
) -> None:
    bundle = write_bundle(tmp_path, CAPS)
    replace_editor_with_tracer(wrapper, capture)
    run(wrapper, capture, [a.format(b=bundle) for a in args], cwd=tmp_path)
    assert (capture / "editor-ran").exists()


# -- the pure pieces, with properties ------------------------------------------------

cap_names = st.sampled_from([*CAPS, "CAP_KILL", "CAP_SYS_RESOURCEX", "cap_sys_resource"])


@given(st.dictionaries(st.sampled_from(["bounding", "effective", "x"]), st.lists(cap_names)))
def test_strip_removes_exactly_the_capability_keeping_order(caps: dict[str, list[str]]) -> None:
    original = {k: list(v) for k, v in caps.items()}
    changed = w.strip_capability(caps)
    assert caps == {k: [c for c in v if c != w.DROPPED] for k, v in original.items()}
    assert changed == any(w.DROPPED in v for v in original.values())


@given(
    st.lists(st.sampled_from(["--debug", "--systemd-cgroup", "--root=/r"]), max_size=3),
    st.lists(st.sampled_from(["--root", "--log", "--log-format", "--criu"]), max_size=3),
    st.sampled_from(["create", "run", "exec", "start", "delete"]),
)
def test_subcommand_is_found_after_any_global_options(
    flags: list[str], valued: list[str], command: str
) -> None:
    args = [*flags]
    for option in valued:
        args += [option, "create-looking-value"]
    args += [command, "--bundle", "x", "id"]
    assert w.subcommand(args) == (command, len(flags) + 2 * len(valued))


def test_option_value_forms() -> None:
    assert w.option_value(["--bundle", "/a", "id"], ("--bundle", "-b")) == "/a"
    assert w.option_value(["-b", "/a"], ("--bundle", "-b")) == "/a"
    assert w.option_value(["--bundle=/a"], ("--bundle", "-b")) == "/a"
    assert w.option_value(["id"], ("--bundle", "-b")) is None
    assert w.option_value(["--", "--bundle", "/a"], ("--bundle", "-b")) is None
