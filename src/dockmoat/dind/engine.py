"""The engine nested daemons run on, as the other dind modules reach it: the SDK
client, the state directory, the docker config, and a daemon's `DindInfo` read
back from its container."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

from dockmoat.dind import context as contexts
from dockmoat.dind import naming
from dockmoat.dind.info import DindInfo
from dockmoat.dind.state import StateDir, default_state_dir
from dockmoat.errors import EngineError
from dockmoat.sdkerrors import engine_errors

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    pass


def engine_client(host: str | None) -> docker.DockerClient:
    """A client for `host` (default: DOCKER_HOST or the local socket), API version negotiated."""
    with engine_errors(f"cannot reach the Docker engine{f' at {host}' if host else ''}"):
        if host:
            return docker.DockerClient(base_url=host, version="auto", timeout=120)
        return docker.from_env(version="auto", timeout=120)


class Engine:
    """One engine and one state directory: what every daemon operation works with."""

    def __init__(
        self,
        host: str | None = None,
        state_dir: Path | None = None,
        docker_config: Path | None = None,
        progress: Progress | None = None,
        client: docker.DockerClient | None = None,
    ) -> None:
        self.host = host
        self.state = StateDir(state_dir or default_state_dir())
        self.docker_config = docker_config or contexts.docker_config_dir()
        self.progress = progress or quiet
        self.client = client or engine_client(host)
        self.api = self.client.api
        # Which engine this is, as the user named it; kept with each daemon's certificates.
        self.engine = host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    def client_address(self, published_on: str) -> str:
        """Where this machine reaches a port the engine published on `published_on`."""
        if published_on in ("", "0.0.0.0", "::"):
            engine = urllib.parse.urlsplit(self.host or os.environ.get("DOCKER_HOST", ""))
            if engine.scheme in ("tcp", "https", "http", "ssh") and engine.hostname:
                return engine.hostname
            return "127.0.0.1"
        return published_on

    def info_from(self, details: dict[str, Any], name: str) -> DindInfo:
        """The `DindInfo` of a daemon container (`details`: its inspect answer) named NAME."""
        labels = details["Config"]["Labels"] or {}
        instance = labels[naming.LABEL_INSTANCE]
        network = naming.network_name(instance)
        settings = details["NetworkSettings"]
        address = str(((settings.get("Networks") or {}).get(network) or {}).get("IPAddress", ""))
        bindings = (settings.get("Ports") or {}).get(f"{naming.TLS_PORT}/tcp") or []
        ports = [int(b["HostPort"]) for b in bindings if b.get("HostPort")]
        if not ports:
            raise EngineError(f"the daemon container {details['Name']} has no published TLS port")
        return DindInfo(
            name=name,
            instance=instance,
            container_id=str(details["Id"]),
            network=network,
            address=address,
            port=ports[0],
            cert_path=self.state.client_dir(instance),
            cache=labels.get(naming.LABEL_CACHE),
            host_address=self.client_address(str(bindings[0].get("HostIp") or "")),
        )

    def write_context(self, info: DindInfo) -> None:
        """The docker CLI context `dind-NAME` for a daemon."""
        contexts.write(
            self.docker_config, info.context, info.host_url, info.instance, info.cert_path
        )

    def close(self) -> None:
        self.client.close()
