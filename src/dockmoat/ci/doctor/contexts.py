"""The docker CLI's current context (`docker context use`, DOCKER_CONTEXT, --context).

Read from the context store, as the docker CLI lays it out:

    $DOCKER_CONFIG/config.json                                  {"currentContext": NAME}
    $DOCKER_CONFIG/contexts/meta/<sha256(NAME)>/meta.json        Endpoints.docker.Host
    $DOCKER_CONFIG/contexts/tls/<sha256(NAME)>/docker/{ca,cert,key}.pem
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from dockmoat.errors import ConfigError

MAX_JSON = 1024 * 1024


class ContextEndpoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    host: str
    # The folder of ca.pem/cert.pem/key.pem when the context carries TLS material.
    tls_dir: Path | None = None
    skip_verify: bool = False


def config_dir(env: Mapping[str, str], home: Path) -> Path:
    return Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else home / ".docker"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as handle:
            data = json.loads(handle.read(MAX_JSON))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from None
    return data if isinstance(data, dict) else None


def selected_name(flag: str | None, env: Mapping[str, str], config: Path) -> str | None:
    """--context, else DOCKER_CONTEXT, else config.json's currentContext; None for "default"."""
    name = flag or env.get("DOCKER_CONTEXT")
    if not name:
        settings = _read_json(config / "config.json") or {}
        name = str(settings.get("currentContext") or "")
    return None if name in ("", "default") else name


def load(name: str, config: Path) -> ContextEndpoint:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = _read_json(config / "contexts" / "meta" / digest / "meta.json")
    if meta is None:
        raise ConfigError(f"docker context {name!r} does not exist in {config / 'contexts'}")
    endpoint = (meta.get("Endpoints") or {}).get("docker") or {}
    host = str(endpoint.get("Host") or "")
    if not host:
        raise ConfigError(f"docker context {name!r} has no docker endpoint host")
    tls_dir = config / "contexts" / "tls" / digest / "docker"
    return ContextEndpoint(
        name=name,
        host=host,
        tls_dir=tls_dir if tls_dir.is_dir() else None,
        skip_verify=bool(endpoint.get("SkipTLSVerify")),
    )
