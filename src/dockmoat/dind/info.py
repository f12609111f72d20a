"""What a started nested daemon is, as a value (stdlib only: it is on the warm path)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockmoat.dind import naming


@dataclass(frozen=True, slots=True)
class DindInfo:
    """A running nested daemon assigned to `name`.

    `env()` is for clients on the engine's machine (the TLS port published on
    127.0.0.1); `network_env()` is for containers attached to `network`, where
    the daemon answers as `docker:2376`.
    """

    name: str
    instance: str
    container_id: str
    network: str
    address: str
    port: int
    cert_path: Path
    cache: str | None = None
    # Where clients outside the daemon's network reach the published TLS port:
    # 127.0.0.1 by default; see DindOptions.publish_address.
    host_address: str = "127.0.0.1"

    @property
    def host_url(self) -> str:
        address = f"[{self.host_address}]" if ":" in self.host_address else self.host_address
        return f"tcp://{address}:{self.port}"

    @property
    def network_url(self) -> str:
        return f"tcp://{naming.ALIAS}:{naming.TLS_PORT}"

    @property
    def context(self) -> str:
        return naming.context_name(self.name)

    def env(self) -> dict[str, str]:
        return {
            "DOCKER_HOST": self.host_url,
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(self.cert_path),
        }

    def network_env(self, cert_path: str = "/certs/client") -> dict[str, str]:
        """The environment for a job container on `network` with the client certs at `cert_path`."""
        return {
            "DOCKER_HOST": self.network_url,
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": cert_path,
        }

    def env_lines(self) -> str:
        # `KEY=value; export KEY`: the line starts with KEY= (easy to grep and to
        # source from a .env-minded tool) and `eval` still exports it to children.
        return "".join(
            f"{key}={shlex.quote(value)}; export {key}\n" for key, value in self.env().items()
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "instance": self.instance,
            "container_id": self.container_id,
            "network": self.network,
            "address": self.address,
            "port": self.port,
            "cert_path": str(self.cert_path),
            "cache": self.cache,
            "host_address": self.host_address,
            "context": self.context,
            "host": self.host_url,
            "network_host": self.network_url,
            "env": self.env(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DindInfo:
        """Rebuild from `to_json()` output; ValueError/KeyError/TypeError when malformed."""
        port = int(data["port"])
        if not 0 < port < 65536:
            raise ValueError(f"bad port {port}")
        cache = data.get("cache")
        return cls(
            name=naming.validate_name(str(data["name"])),
            instance=str(data["instance"]),
            container_id=str(data["container_id"]),
            network=str(data["network"]),
            address=str(data["address"]),
            port=port,
            cert_path=Path(str(data["cert_path"])),
            cache=None if cache is None else str(cache),
            host_address=str(data.get("host_address") or "127.0.0.1"),
        )
