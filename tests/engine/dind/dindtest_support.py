"""The `Dind` helper of the dind engine tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker

from dockmoat.dind import naming
from dockmoat.dind.manager import DindManager
from dockmoat.dind.spec import DindOptions


class Dind:
    """A manager in a private state dir plus helpers to run the real CLI and clients."""

    def __init__(self, tmp: Path, client: docker.DockerClient, image: str) -> None:
        self.state_dir = tmp / "state"
        self.docker_config = tmp / "docker-config"
        self.docker_config.mkdir()
        self.image = image
        self.client = client
        self.manager = DindManager(
            state_dir=self.state_dir, docker_config=self.docker_config, client=client
        )
        self.names: list[str] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKMOAT_STATE_DIR=str(self.state_dir), DOCKER_CONFIG=str(self.docker_config))
        env.update(extra)
        return env

    def options(self, **kwargs: Any) -> DindOptions:
        return DindOptions(image=self.image, **kwargs)

    def up(self, name: str, **kwargs: Any) -> Any:
        self.names.append(name)
        wait_cache = kwargs.pop("wait_cache", 0.0)
        return self.manager.up(name, self.options(**kwargs), wait_cache=wait_cache)

    def cli(
        self, *args: str, check: bool = True, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        if args[:2] == ("dind", "up"):
            self.names.append(args[2])
        return subprocess.run(
            [sys.executable, "-m", "dockmoat", *args],
            capture_output=True,
            text=True,
            check=check,
            env=self.env(),
            timeout=240,
            **kwargs,
        )

    def docker(
        self,
        info: Any,
        *args: str,
        cli: str = "docker",
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """The real docker CLI against a nested daemon, over mutual TLS."""
        return subprocess.run(
            [cli, *args],
            capture_output=True,
            text=True,
            check=check,
            input=input,
            env=self.env(**info.env(), DOCKER_BUILDKIT="0"),
            timeout=240,
        )

    def instance_resources(self, instance: str) -> dict[str, list[str]]:
        """What the engine still holds for one daemon instance."""
        label = f"{naming.LABEL_INSTANCE}={instance}"
        return {
            "containers": [
                c.name for c in self.client.containers.list(all=True, filters={"label": label})
            ],
            "networks": [n.name for n in self.client.networks.list(filters={"label": label})],
            "volumes": [v.name for v in self.client.volumes.list(filters={"label": label})],
        }

    def cleanup(self) -> None:
        for name in self.names:
            with contextlib.suppress(Exception):
                self.manager.down(name)
