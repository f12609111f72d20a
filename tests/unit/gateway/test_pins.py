"""Bind pins on the real filesystem and the real mount(2) (root only): the pinned object
is the one checked, whatever happens to its path afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockmoat.api.request import ApiRequest
from dockmoat.gateway import pins as pins_module
from dockmoat.gateway.pins import (
    GRACE,
    SOURCES,
    BindPins,
    SourceChanged,
    mount_sources,
    open_nofollow,
    pin_born,
    unpin,
)
from dockmoat.policy.decision import Allow, Deny, Rewrite
from dockmoat.policy.engine import CompiledPolicy, load_policy
from dockmoat.policy.trial import routed, with_json_body

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")


def create(body: Any) -> ApiRequest:
    return with_json_body(routed("POST", "/v1.41/containers/create", listener="t"),
                          json.dumps(body).encode())  # fmt: skip


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    folder = tmp_path / "ws"
    (folder / "d").mkdir(parents=True)
    (folder / "d" / "marker").write_text("inside")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "marker").write_text("SECRET")
    return folder


@pytest.fixture
def pins(tmp_path: Path) -> Iterator[BindPins]:
    directory = tmp_path / "pins"
    directory.mkdir(mode=0o700)
    yield BindPins(directory)
    for entry in directory.iterdir():
        if entry.name != SOURCES:
            unpin(str(entry))
    with contextlib.suppress(FileNotFoundError):
        (directory / SOURCES).rmdir()


@pytest.fixture
def policy(ws: Path, pins: BindPins) -> CompiledPolicy:
    return load_policy("baseline", allow_bind=[ws], env={}, protect=(str(pins.directory),))


def pinned(decision: Any) -> list[str]:
    assert isinstance(decision, Rewrite), decision
    assert decision.body_json is not None
    return list(decision.body_json["HostConfig"]["Binds"])


def run(pins: BindPins, policy: CompiledPolicy, body: Any) -> Any:
    return asyncio.run(pins(create(body), policy))


def test_a_swap_after_pinning_does_not_reach_the_pin(
    ws: Path, pins: BindPins, policy: CompiledPolicy
) -> None:
    binds = pinned(run(pins, policy, {"HostConfig": {"Binds": [f"{ws}/d:/h:ro"]}}))
    source, rest = binds[0].split(":", 1)
    assert rest == "/h:ro" and Path(source).parent == pins.directory
    (ws / "d").rename(ws / "d.old")
    (ws / "d").symlink_to(ws.parent / "secret")
    assert (Path(source) / "marker").read_text() == "inside"


def test_a_file_source_is_pinned_as_a_file(
    ws: Path, pins: BindPins, policy: CompiledPolicy
) -> None:
    binds = pinned(run(pins, policy, {"HostConfig": {"Binds": [f"{ws}/d/marker:/f"]}}))
    source = binds[0].split(":", 1)[0]
    (ws / "d" / "marker").rename(ws / "d" / "old")
    (ws / "d" / "marker").symlink_to(ws.parent / "secret" / "marker")
    assert Path(source).read_text() == "inside"


def test_missing_binds_folders_are_made_missing_mount_sources_refused(
    ws: Path, pins: BindPins, policy: CompiledPolicy
) -> None:
    binds = pinned(run(pins, policy, {"HostConfig": {"Binds": [f"{ws}/new/sub:/n"]}}))
    assert (ws / "new" / "sub").is_dir() and oct((ws / "new").stat().st_mode & 0o777) == "0o755"
    assert Path(binds[0].split(":")[0]).is_dir()
    mount = {"Type": "bind", "Source": f"{ws}/absent", "Target": "/m"}
    decision = run(pins, policy, {"HostConfig": {"Mounts": [mount]}})
    assert isinstance(decision, Deny) and decision.status == 400
    assert "bind source path does not exist" in decision.message
    assert not (ws / "absent").exists()


def test_other_requests_and_bodies_without_binds_pass_untouched(
    ws: Path, pins: BindPins, policy: CompiledPolicy
) -> None:
    assert isinstance(run(pins, policy, {"Image": "x", "HostConfig": {}}), Allow)
    volume = {"HostConfig": {"Binds": ["cache:/c"]}}
    assert isinstance(run(pins, policy, volume), Allow)
    other = with_json_body(routed("POST", "/v1.41/networks/create", listener="t"), b'{"Name":"n"}')
    assert isinstance(asyncio.run(pins(other, policy)), Allow)
    assert list(pins.directory.iterdir()) == []


def test_a_source_that_leaves_the_allowed_folders_at_pin_time_is_refused_and_unpinned(
    ws: Path, pins: BindPins, policy: CompiledPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The policy allowed ws/d; before the pin opens it, d becomes a link out of ws.
    real_resolve = pins_module.hostpaths.resolve

    def swapped(path: str) -> str:
        resolved = real_resolve(path)
        if path.endswith("/d") and not (ws / "d").is_symlink():
            (ws / "d").rename(ws / "d.old")
            (ws / "d").symlink_to(ws.parent / "secret")
        return resolved

    monkeypatch.setattr(pins_module.hostpaths, "resolve", swapped)
    body = {"HostConfig": {"Binds": [f"{ws}/ok:/a", f"{ws}/d:/h"]}}
    decision = run(pins, policy, body)
    assert isinstance(decision, Deny) and decision.rule == "containers.bind-pins"
    assert "changed while it was checked" in decision.message
    assert list(pins.directory.iterdir()) == []  # the first source's pin is gone again


def test_a_moved_source_is_checked_again_by_its_new_name(
    ws: Path,
    pins: BindPins,
    policy: CompiledPolicy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Opened as ws/d, then moved out of the allowed folder before the re-check.
    outside = tmp_path / "outside"
    real_held = pins_module.held_path

    def moved(fd: int) -> str:
        (ws / "d").rename(outside)
        return real_held(fd)

    monkeypatch.setattr(pins_module, "held_path", moved)
    decision = run(pins, policy, {"HostConfig": {"Binds": [f"{ws}/d:/h"]}})
    assert isinstance(decision, Deny) and decision.rule == "containers.bind-pins"
    assert list(pins.directory.iterdir()) == []


def test_open_nofollow_refuses_a_symlink_anywhere(ws: Path) -> None:
    (ws / "link").symlink_to(ws / "d")
    for path in (f"{ws}/link", f"{ws}/link/marker"):
        with pytest.raises(SourceChanged):
            open_nofollow(path, create=False)
    with pytest.raises(FileNotFoundError):
        open_nofollow(f"{ws}/none", create=False)
    fd = open_nofollow(f"{ws}/d/marker", create=False)
    os.close(fd)


def test_sweep_removes_only_old_unused_pins(
    pins: BindPins, ws: Path, policy: CompiledPolicy
) -> None:
    body = {"HostConfig": {"Binds": [f"{ws}/d:/a", f"{ws}/d/marker:/b"]}}
    used, unused = (s.split(":")[0] for s in pinned(run(pins, policy, body)))
    foreign = pins.directory / "not-a-pin"
    foreign.mkdir()
    born = pin_born(Path(unused).name)
    assert born is not None
    assert pins.sweep({used}, born + GRACE / 2) == []  # young: a create may be in flight
    assert pins.sweep({used}, born + GRACE + 1) == [unused]
    assert sorted(p.name for p in pins.directory.iterdir()) == sorted(
        [Path(used).name, foreign.name, SOURCES]
    )
    assert [p.name for p in (pins.directory / SOURCES).iterdir()] == [Path(used).name]
    assert (Path(used) / "marker").read_text() == "inside"
    foreign.rmdir()


def test_mount_sources_reads_a_container_list() -> None:
    listing = [
        {
            "Id": "a",
            "Mounts": [{"Type": "bind", "Source": "/p/1"}, {"Type": "volume", "Source": "/v"}],
        },
        {"Id": "b", "Mounts": None},
        {"Id": "c"},
        "junk",
    ]
    assert mount_sources(listing) == {"/p/1", "/v"}
    assert mount_sources({"message": "error"}) == set()


def test_a_pin_that_cannot_be_made_is_a_denial_not_a_missing_source(
    ws: Path, pins: BindPins, policy: CompiledPolicy
) -> None:
    broken = BindPins(pins.directory / "gone")  # mkdir of the pin fails: ENOENT
    decision = asyncio.run(broken(create({"HostConfig": {"Binds": [f"{ws}/d:/h"]}}), policy))
    assert isinstance(decision, Deny) and decision.status == 403
    assert "could not be pinned" in decision.message


def test_answers_name_the_source_the_client_asked_for(
    ws: Path, pins: BindPins, policy: CompiledPolicy
) -> None:
    """What `docker inspect` shows through the guard: the pin named by its source, in
    Mounts, HostConfig.Binds and HostConfig.Mounts, also by a serve started afterwards
    (the sources are written beside the pins)."""
    asked, mount = f"{ws}/d", {"Type": "bind", "Source": f"{ws}/d/marker", "Target": "/m"}
    decision = run(pins, policy, {"HostConfig": {"Binds": [f"{asked}:/h:ro"], "Mounts": [mount]}})
    assert isinstance(decision, Rewrite) and decision.body_json is not None
    host = decision.body_json["HostConfig"]
    pin, pinned_file = host["Binds"][0].split(":", 1)[0], host["Mounts"][0]["Source"]
    inspect = {
        "Id": "c1",
        "Mounts": [{"Type": "bind", "Source": pin}, {"Type": "bind", "Source": pinned_file},
                   {"Type": "volume", "Source": "/var/lib/docker/volumes/v/_data"}],
        "HostConfig": {"Binds": [f"{pin}:/h:ro", "v:/v"], "Mounts": host["Mounts"]},
    }  # fmt: skip
    for reader in (pins, BindPins(pins.directory)):  # this serve, and the next one
        shown = reader.shown(inspect)
        assert [m["Source"] for m in shown["Mounts"]] == [
            asked,
            mount["Source"],
            "/var/lib/docker/volumes/v/_data",
        ]
        assert shown["HostConfig"]["Binds"] == [f"{asked}:/h:ro", "v:/v"]
        assert shown["HostConfig"]["Mounts"][0]["Source"] == mount["Source"]
    assert inspect["Mounts"][0]["Source"] == pin  # the daemon's answer is not changed
    untouched = {"Id": "c2", "Mounts": [{"Source": "/elsewhere"}], "HostConfig": {"Binds": None}}
    assert pins.shown(untouched) is untouched
    # A path that merely looks like a pin, and a removed pin: shown as they are.
    assert pins.shown({"Mounts": [{"Source": f"{pins.directory}/../x"}]})["Mounts"] == [
        {"Source": f"{pins.directory}/../x"}
    ]
    unpin(pin)
    assert not (pins.directory / SOURCES / Path(pin).name).exists()
    assert BindPins(pins.directory).source_of(pin) is None


def test_answers_are_held_only_while_some_pin_exists(
    ws: Path, pins: BindPins, policy: CompiledPolicy
) -> None:
    """No pin, no answer to read: a gateway that pinned nothing (and finds nothing written
    down by an earlier serve) relays container lists as read."""
    assert not pins.active and not BindPins(pins.directory).active
    binds = pinned(run(pins, policy, {"HostConfig": {"Binds": [f"{ws}/d:/h"]}}))
    assert pins.active and BindPins(pins.directory).active  # also for the next serve
    born = pin_born(Path(binds[0].split(":")[0]).name)
    assert born is not None
    assert pins.sweep(set(), born + GRACE + 1)
    assert not pins.active and not BindPins(pins.directory).active
