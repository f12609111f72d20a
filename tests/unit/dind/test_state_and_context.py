"""State directory, claimants, docker context store, DindInfo, cache holders."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.dind import cache, certs, claimant, context, naming
from dockmoat.dind.info import DindInfo
from dockmoat.dind.state import StateDir, default_state_dir
from dockmoat.errors import ConfigError


def test_default_state_dir() -> None:
    assert default_state_dir({}, uid=0) == Path("/var/lib/dockmoat/dind")
    assert default_state_dir({"XDG_STATE_HOME": "/x"}, uid=1000) == Path("/x/dockmoat/dind")
    assert default_state_dir({"HOME": "/h"}, uid=1000) == Path("/h/.local/state/dockmoat/dind")
    assert default_state_dir({"DOCKMOAT_STATE_DIR": "/s"}, uid=0) == Path("/s")


def test_state_dir_is_private_and_ca_is_made_once(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    first = state.ca()
    assert state.ca() == first
    assert (tmp_path / "state" / "ca" / "key.pem").stat().st_mode & 0o777 == 0o600


def test_open_state_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir(mode=0o755)
    (tmp_path / "open").chmod(0o755)
    with pytest.raises(ConfigError, match="chmod 700"):
        StateDir(tmp_path / "open")


def test_client_layout_and_modes(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    issued = certs.issue_daemon_certs(state.ca(), "i-1", ["docker"], ["10.0.0.2"])
    client = state.write_client("i-1", issued, "who")
    assert sorted(p.name for p in client.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
    assert (client / "key.pem").stat().st_mode & 0o777 == 0o600
    assert state.instances() == ["i-1"] and state.claimant_of("i-1") == "who"
    assert state.remove_daemon("i-1") and state.instances() == []


def test_claimant_of_a_live_and_a_dead_process() -> None:
    assert not claimant.provably_dead(claimant.current())
    child = subprocess.Popen(["sleep", "0"])
    child.wait()
    me = claimant.parse(claimant.current())
    assert me is not None
    dead = f"{me[0]}/{me[1]}/{child.pid}/1"
    assert claimant.provably_dead(dead)
    # Another boot or namespace cannot be judged: never "dead".
    assert not claimant.provably_dead(f"other-boot/{me[1]}/{child.pid}/1")
    assert not claimant.provably_dead("garbage")
    assert not claimant.provably_dead(None)


def test_context_store_roundtrip(tmp_path: Path) -> None:
    cert_dir = tmp_path / "c"
    cert_dir.mkdir()
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (cert_dir / name).write_bytes(name.encode())
    config = tmp_path / "cfg"
    context.write(config, "dockmoat-x", "tcp://127.0.0.1:1", "x-1", cert_dir)
    assert context.instance_of(config, "dockmoat-x") == "x-1"
    assert context.ours(config) == {"dockmoat-x": "x-1"}
    (meta,) = (config / "contexts" / "meta").iterdir()
    assert (
        json.loads((meta / "meta.json").read_text())["Endpoints"]["docker"]["Host"]
        == "tcp://127.0.0.1:1"
    )
    assert context.remove(config, "dockmoat-x")
    assert context.ours(config) == {}


def test_foreign_context_is_never_removed(tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    digest = __import__("hashlib").sha256(b"dockmoat-mine").hexdigest()
    meta = config / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({"Name": "dockmoat-mine", "Metadata": {}}))
    assert not context.remove(config, "dockmoat-mine")
    assert meta.exists()


@given(
    st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
    st.integers(min_value=1, max_value=65535),
    st.none() | st.from_regex(r"[a-z]{1,10}", fullmatch=True),
)
def test_info_json_roundtrip(name: str, port: int, cache_key: str | None) -> None:
    info = DindInfo(name, name + "-1", "id", "net", "10.0.0.2", port, Path("/c"), cache_key)
    assert DindInfo.from_json(json.loads(json.dumps(info.to_json()))) == info


def test_env_lines_eval_in_a_shell() -> None:
    info = DindInfo("x", "x-1", "id", "net", "10.0.0.2", 1234, Path("/c d/it's"))
    out = subprocess.run(
        [
            "sh",
            "-c",
            info.env_lines() + "sh -c 'echo \"$DOCKER_HOST|$DOCKER_CERT_PATH|$DOCKER_TLS_VERIFY\"'",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    )
    assert out.stdout.strip() == "tcp://127.0.0.1:1234|/c d/it's|1"
    assert info.env_lines().splitlines()[0].startswith("DOCKER_HOST=")


def test_live_cache_holders() -> None:
    me = claimant.current()
    running = {"State": "running", "Names": ["/a"], "Labels": {}}
    exited = {"State": "exited", "Names": ["/b"], "Labels": {}}
    starting = {"State": "created", "Names": ["/c"], "Labels": {naming.LABEL_CLAIMANT: me}}
    assert cache.live_holder([exited]) is None
    assert cache.live_holder([exited, running]) == "a"
    assert cache.live_holder([starting]) == "c"
