"""The nested-engine matrix: one `dockmoat dind up` per engine version, and a
`dockmoat serve` in front of it over mutual TLS (what a CI host with DinD runs).

The versions are the host's engine (`dockmoat-test/dind:latest`, also tagged with its
version) and every engine tree scripts/install-engine unpacked (`dockmoat-test/dind:<v>`,
tests/harness/images.py builds them all in `scripts/test-engine up`).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.images import BUSYBOX_IMAGE, dind_tag, engine_trees, engine_version, host_binary
from support.processes import terminate

DOCKMOAT = Path(sys.executable).parent / "dockmoat"


def matrix_versions() -> list[str]:
    """Engine versions of the matrix, oldest first (`20.10`, `26.1`, `28.5`)."""
    versions = {engine_version(host_binary("dockerd")), *engine_trees()}
    return sorted(versions, key=lambda v: tuple(int(p) for p in v.split(".")))


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_CLI_HINTS"] = "false"
    env.update(extra)
    return env


@dataclass
class Nested:
    """A nested daemon started by `dockmoat dind up`."""

    version: str
    name: str
    state: Path
    host: str
    cert_path: str

    def env(self, **extra: str) -> dict[str, str]:
        """The environment `dind up` prints: DOCKER_HOST over mutual TLS."""
        return base_env(
            DOCKER_HOST=self.host, DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=self.cert_path, **extra
        )


def dind(*args: str, state: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DOCKMOAT), "dind", *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=base_env(DOCKER_CONFIG=str(state / "docker-config")),
        check=False,
    )


def nested_up(version: str, state: Path, *extra: str) -> Nested:
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"dmtest-mx{version.replace('.', '')}-{secrets.token_hex(4)}"
    up = dind(
        "up", name, "--image", dind_tag(version), "--preload", BUSYBOX_IMAGE,
        "--format", "json", "--no-pool", *extra, state=state,
    )  # fmt: skip
    if up.returncode != 0:
        raise AssertionError(f"dind up {dind_tag(version)} failed: {up.stderr[-3000:]}")
    info = json.loads(up.stdout)
    return Nested(version, name, state, info["host"], info["cert_path"])


def nested_down(nested: Nested) -> None:
    down = dind("down", nested.name, state=nested.state)
    assert down.returncode == 0, down.stderr


@dataclass
class Guard:
    """`dockmoat serve` on a unix socket, its upstream a nested daemon over mutual TLS."""

    socket: Path
    log: Path
    process: subprocess.Popen[bytes]

    def env(self, **extra: str) -> dict[str, str]:
        return base_env(DOCKER_HOST=f"unix://{self.socket}", **extra)

    def stop(self) -> int:
        return terminate(self.process)


def guard_up(nested: Nested, directory: Path, *args: str) -> Guard:
    """serve --upstream <nested> with the client certificate `dind up` made (the env)."""
    directory.mkdir(parents=True, exist_ok=True)
    sock = directory / "docker.sock"
    log = directory / "serve.log"
    argv = [
        str(DOCKMOAT), "serve", "--listen", f"unix://{sock}", "--upstream", nested.host,
        "--state-db", str(directory / "state.db"),
        "--control-socket", str(directory / "control.sock"),
        "--jobs-dir", str(directory / "jobs"), "--bind-pins", "off", *args,
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=nested.env()
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"dockmoat serve exited: {log.read_text()[-2000:]}")
        ping = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True, env=base_env(DOCKER_HOST=f"unix://{sock}"), check=False,
        )  # fmt: skip
        if sock.exists() and ping.returncode == 0:
            return Guard(sock, log, process)
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"dockmoat serve did not answer: {log.read_text()[-2000:]}")
