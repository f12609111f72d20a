"""What makes `dind up` fast without changing what it does: the answer about
`--default-network-opt` remembered per image, the manager CA read in the background,
replacements started after a hand-out, and the lazily loaded CLI families."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest
from click.testing import CliRunner
from dind_helpers import container_config, warm_info

from dockmoat.cli import _FAMILIES, main
from dockmoat.dind import certs, launch, spec
from dockmoat.dind.info import DindInfo
from dockmoat.dind.pool import PoolService
from dockmoat.dind.state import StateDir
from dockmoat.errors import ConfigError

IMAGE_ID = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("mtu", "network_opt", "env"),
    [
        (1500, None, []),
        (1500, True, []),
        (1400, None, ["DOCKMOAT_NETWORK_MTU=1400"]),
        (1400, True, ["DOCKMOAT_NETWORK_MTU=1400", "DOCKMOAT_NETWORK_OPT=yes"]),
        (1400, False, ["DOCKMOAT_NETWORK_MTU=1400", "DOCKMOAT_NETWORK_OPT=no"]),
    ],
)
def test_a_known_answer_reaches_the_wrapper(
    mtu: int, network_opt: bool | None, env: list[str]
) -> None:
    config = container_config(mtu, network_opt)
    assert [e for e in config["Env"] if e.startswith("DOCKMOAT_NETWORK_")] == env
    # The flag is added by the wrapper (asked or told), never to the command itself.
    assert "--default-network-opt" not in " ".join(config["Cmd"])


def test_the_wrapper_asks_only_when_not_told() -> None:
    script = spec.RECEIVE_CERTS
    asks = script.index("dockerd --help")
    assert (
        script[:asks]
        .rstrip()
        .endswith(f'[ -n "${spec.NETWORK_MTU_ENV}" ] && [ -z "${spec.NETWORK_OPT_ENV}" ]; then')
    )
    assert spec.NETWORK_OPT_MARK in script


@pytest.mark.parametrize(
    ("log", "answer"),
    [
        (b"dockmoat: dockerd knows --default-network-opt: yes\nlevel=info msg=x\n", True),
        (b"time=1 msg=a\r\ndockmoat: dockerd knows --default-network-opt: no\r\n", False),
        (b"level=info msg=starting\n", None),
        (b"dockmoat: dockerd knows --default-network-opt: maybe\n", None),
        (b"", None),
    ],
)
def test_the_answer_is_read_from_the_log(log: bytes, answer: bool | None) -> None:
    assert spec.network_opt_from_log(log) is answer


def test_image_facts_are_kept_per_image_id_in_the_private_state(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    assert state.image_fact(IMAGE_ID, "network-opt") is None
    state.remember_image_fact(IMAGE_ID, "network-opt", "yes")
    assert state.image_fact(IMAGE_ID, "network-opt") == "yes"
    assert state.image_fact("sha256:" + "cd" * 32, "network-opt") is None
    stored = tmp_path / "state" / "images" / ("ab" * 32 + ".network-opt")
    assert stored.read_text() == "yes"
    assert stored.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state" / "images").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("image_id", ["", "sha256:../../etc", "latest", "sha256:" + "AB" * 32])
def test_image_facts_need_a_real_image_id(tmp_path: Path, image_id: str) -> None:
    state = StateDir(tmp_path / "state")
    state.remember_image_fact(image_id, "network-opt", "yes")
    assert state.image_fact(image_id, "network-opt") is None
    assert not (tmp_path / "state" / "images").exists()


def test_the_ca_is_read_in_the_background(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    engine = SimpleNamespace(state=state)
    made = launch.read_ca_meanwhile(engine)  # type: ignore[arg-type]
    pair = made.result(timeout=30)
    assert pair == state.ca()
    certs.load_ca(pair)


def test_an_unusable_ca_fails_where_it_is_needed(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.ca()
    (tmp_path / "state" / "ca" / "key.pem").write_bytes(b"garbage")
    future = launch.read_ca_meanwhile(SimpleNamespace(state=state))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unusable"):
        future.result(timeout=30)


class _SlowAssign:
    """A manager whose rename waits until the test lets it go."""

    host = None

    def __init__(self) -> None:
        self.launched = 0
        self.renaming = threading.Event()
        self.release = threading.Event()

    def progress(self, message: str) -> None:
        pass

    def launch_warm(self, options: Any, who: str, pool_id: str) -> tuple[str, DindInfo]:
        self.launched += 1
        info = warm_info(self.launched)
        return info.container_id, info

    def assign(self, container: str, name: str, warm: DindInfo | None = None) -> DindInfo:
        self.renaming.set()
        assert self.release.wait(10)
        assert warm is not None
        return dataclasses.replace(warm, name=name)

    def destroy(self, container: str) -> list[str]:
        return []


def test_the_replacement_starts_once_the_hand_out_is_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PoolService, "_alive", lambda self, warm: True)
    fake = _SlowAssign()
    service = PoolService(
        fake,  # type: ignore[arg-type]
        spec.DindOptions(image="img"),
        1,
        tmp_path / "pool.sock",
    )
    threading.Thread(target=service.serve, daemon=True).start()
    try:
        deadline = time.monotonic() + 10
        while service.ready_count() < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        replies: list[dict[str, Any]] = []
        shape = service.shape()
        taker = threading.Thread(target=lambda: replies.append(service.take("job", shape)))
        taker.start()
        assert fake.renaming.wait(10)
        time.sleep(1.5)  # longer than the starter's periodic wake-up
        assert fake.launched == 1, "a replacement started during the hand-out"
        fake.release.set()
        taker.join(10)
        assert replies[0]["ok"] is True
        while fake.launched < 2:
            assert time.monotonic() < deadline + 10
            time.sleep(0.02)
    finally:
        fake.release.set()
        service.shutdown(wait=5)


def test_the_lazy_cli_lists_every_family_and_loads_each() -> None:
    runner = CliRunner()
    listed = runner.invoke(main, ["--help"])
    assert listed.exit_code == 0
    commands = listed.output.split("Commands:", 1)[1]
    for family in _FAMILIES:
        assert f"  {family} " in commands
        assert isinstance(main.get_command(click.Context(main), family), click.Command)
        shown = runner.invoke(main, [family, "--help"])
        assert shown.exit_code == 0, (family, shown.output)
        assert shown.output.startswith(f"Usage: main {family}")
