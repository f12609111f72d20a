"""The harness's edits of /etc/hosts and daemon.json: idempotent, and keep what others wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import clients, hosts_file
from harness.install import ENGINE_SETS, needs_engine, wanted_packages
from harness.runtime_workaround import (
    RUNTIME_NAME,
    WorkaroundError,
    merged_daemon_config,
    register,
)

HOSTS = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n10.0.0.5 build-box\n"
lines = st.lists(
    st.text(st.characters(blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"))
)


def test_block_maps_every_hub_name_once_and_keeps_other_lines() -> None:
    text = hosts_file.with_block(HOSTS)
    assert text.startswith(HOSTS)
    for name in hosts_file.HUB_HOSTS:
        assert text.count(f"127.0.0.1 {name}\n") == 1


def test_stale_block_is_replaced_not_duplicated() -> None:
    stale = HOSTS + f"{hosts_file.BEGIN}\n127.0.0.1 old.example\n{hosts_file.END}\n9.9.9.9 after\n"
    text = hosts_file.with_block(stale)
    assert "old.example" not in text
    assert text.count(hosts_file.BEGIN) == 1
    assert "9.9.9.9 after\n" in text


@given(lines)
def test_with_block_is_idempotent_and_keeps_foreign_lines(original: list[str]) -> None:
    text = "\n".join(original)
    once = hosts_file.with_block(text)
    assert hosts_file.with_block(once) == once
    assert once.count(hosts_file.BEGIN) >= 1
    assert once.endswith(hosts_file.END + "\n")


@given(st.lists(st.sampled_from(["a b", "", hosts_file.BEGIN, hosts_file.END, "127.0.0.1 x"])))
def test_only_complete_blocks_are_removed(original: list[str]) -> None:
    text = "\n".join(original)
    result = hosts_file.with_block(text).splitlines()
    body = result[: -len(hosts_file.HUB_HOSTS) - 2]
    # What survives is the input minus complete BEGIN..END blocks, in order.
    expected: list[str] = []
    open_block: list[str] | None = None
    for line in text.splitlines():
        if open_block is None:
            if line == hosts_file.BEGIN:
                open_block = [line]
            else:
                expected.append(line)
        elif line == hosts_file.END:
            open_block = None
        else:
            open_block.append(line)
    expected += open_block or []
    assert body == expected


def test_apply_rewrites_in_place_once(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS)
    inode = hosts.stat().st_ino
    assert hosts_file.apply(hosts)
    assert not hosts_file.apply(hosts)
    assert hosts.stat().st_ino == inode, "bind-mounted /etc/hosts must be edited in place"


def test_merge_keeps_other_keys_and_runtimes() -> None:
    current: dict[str, object] = {
        "log-level": "warn",
        "runtimes": {"crun": {"path": "/usr/bin/crun"}},
        "default-runtime": "crun",
    }
    merged = merged_daemon_config(current, Path("/w"))
    assert merged["log-level"] == "warn"
    assert merged["runtimes"] == {"crun": {"path": "/usr/bin/crun"}, RUNTIME_NAME: {"path": "/w"}}
    assert merged["default-runtime"] == RUNTIME_NAME
    assert current["runtimes"] == {"crun": {"path": "/usr/bin/crun"}}, "input not mutated"


def test_register_is_idempotent(tmp_path: Path) -> None:
    config = tmp_path / "docker" / "daemon.json"
    assert register(Path("/w"), config)
    assert not register(Path("/w"), config)
    assert json.loads(config.read_text())["runtimes"][RUNTIME_NAME] == {"path": "/w"}


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_register_refuses_a_broken_file_and_leaves_it(tmp_path: Path, content: str) -> None:
    config = tmp_path / "daemon.json"
    config.write_text(content)
    with pytest.raises(WorkaroundError):
        register(Path("/w"), config)
    assert config.read_text() == content


def test_plain_packages_and_when_the_engine_is_installed() -> None:
    def nothing(_: str) -> bool:
        return False

    def everything(_: str) -> bool:
        return True

    plain = wanted_packages(True, nothing)
    assert plain[0] == "busybox-static" and "python3-docker" in plain  # compose v1's libraries
    assert "docker.io" not in plain  # the engine comes from newer suites, by name
    assert wanted_packages(False, everything) == []
    assert wanted_packages(False, nothing)[-1] == "python3-venv"
    # No dockerd, or an old one: install the current engine; a user's answering engine
    # without a local dockerd (a remote DOCKER_HOST) is left alone.
    assert needs_engine(False, None) and needs_engine(True, 20) and needs_engine(False, 25)
    assert not needs_engine(True, None) and not needs_engine(False, 28)


def test_engine_sets_take_sid_then_trixie_with_bookworms_runc() -> None:
    (sid, sid_set), (trixie, trixie_set) = ENGINE_SETS
    assert (sid, trixie) == ("sid", "trixie")
    assert "docker.io/sid" in sid_set and "docker-buildx/sid" in sid_set
    assert "docker.io/trixie" in trixie_set and "docker-compose/trixie" in trixie_set
    # sid's and trixie's runc need a newer libc than Debian 12's: runc is the machine's own.
    assert "runc" in sid_set and "runc" in trixie_set


def test_client_wrappers_name_their_trees(tmp_path: Path) -> None:
    texts = clients.wrappers(tmp_path)
    assert set(texts) == {"docker-20.10", "docker-26.1", "docker-compose-v1"}
    assert f"{tmp_path}/trees/engine-20.10/usr/bin/docker" in texts["docker-20.10"]
    assert "DOCKER_CONFIG" in texts["docker-26.1"]
    links = clients.plugin_links(tmp_path)
    assert {link.name for link in links} == {"docker-buildx", "docker-compose"}
