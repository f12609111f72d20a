"""The matrix's nested engines: their sed runtime wrapper on real spec files, the
capability check, and the record `matrix-up` writes and `down` reads."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from harness import daemon, nested

RUNC_STUB = """#!/bin/sh
printf '%s\\n' "$@" > "$CAPTURE/argv"
"""
ALL = ["CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_NET_ADMIN"]


def spec(caps: list[str]) -> str:
    lists = {k: caps for k in ("bounding", "effective", "permitted")}
    # Compact, as containerd writes it (Go's json.Marshal).
    return json.dumps({"process": {"capabilities": lists}}, separators=(",", ":"))


@pytest.fixture
def run_wrapper(tmp_path: Path) -> Path:
    wrapper = tmp_path / "runc-wrapper"
    wrapper.write_text(nested.nested_wrapper_text())
    wrapper.chmod(0o755)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "runc").write_text(RUNC_STUB)
    (bindir / "runc").chmod(0o755)
    return wrapper


def call(wrapper: Path, tmp_path: Path, *args: str) -> list[str]:
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "CAPTURE": str(tmp_path)}
    subprocess.run([str(wrapper), *args], env=env, check=True)
    return (tmp_path / "argv").read_text().splitlines()


@pytest.mark.parametrize(
    "caps",
    [ALL, ["CAP_SYS_RESOURCE"], ["CAP_SYS_RESOURCE", "CAP_CHOWN"], ["CAP_CHOWN"], []],
)
def test_the_capability_is_removed_from_every_list(
    run_wrapper: Path, tmp_path: Path, caps: list[str]
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(spec(caps))
    argv = call(run_wrapper, tmp_path, "--root", "/r", "create", "--bundle", str(bundle), "id")
    assert argv == ["--root", "/r", "create", "--bundle", str(bundle), "id"]
    edited = json.loads((bundle / "config.json").read_text())
    expected = [c for c in caps if c != "CAP_SYS_RESOURCE"]
    assert all(v == expected for v in edited["process"]["capabilities"].values())


def test_exec_process_files_are_edited(run_wrapper: Path, tmp_path: Path) -> None:
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"capabilities": {"bounding": ALL}}, separators=(",", ":")))
    call(run_wrapper, tmp_path, "exec", "--process", str(process), "id")
    assert json.loads(process.read_text())["capabilities"]["bounding"] == [
        "CAP_CHOWN",
        "CAP_NET_ADMIN",
    ]


def test_other_calls_go_straight_to_runc(run_wrapper: Path, tmp_path: Path) -> None:
    assert call(run_wrapper, tmp_path, "state", "id") == ["state", "id"]


@pytest.mark.parametrize(
    ("bounding", "lacks"), [("000001ffffffffff", False), ("000001fffeffffff", True)]
)
def test_the_bounding_set_decides(tmp_path: Path, bounding: str, lacks: bool) -> None:
    status = tmp_path / "status"
    status.write_text(f"Name:\tx\nCapInh:\t0\nCapBnd:\t{bounding}\n")
    assert nested.kernel_lacks_cap_sys_resource(status) is lacks


def test_the_record_round_trips(tmp_path: Path) -> None:
    paths = daemon.Paths(tmp_path)
    assert nested.recorded(paths) == {}
    engine = nested.Nested("20.10", "dmtest-engine2010-x", "dmtest-engine2010-x", "/s/d.sock")
    nested._write(paths, {"20.10": engine})
    assert nested.recorded(paths) == {"20.10": engine}
    assert engine.url == "unix:///s/d.sock"
    nested._write(paths, {})
    assert not nested.record_path(paths).exists()
