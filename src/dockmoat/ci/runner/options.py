"""What `dockmoat run` was asked to do, validated once at start-up."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from dockmoat.errors import ConfigError

DEFAULT_IMAGE = "docker:27-cli"
DEFAULT_DIND_IMAGE = "docker:27-dind"
Mode = Literal["guarded", "dind", "socket"]
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Variables the mode sets; a job may not override its own wiring.
WIRED = frozenset({"DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"})


class RunOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    mode: Mode
    command: tuple[str, ...]
    image: str = DEFAULT_IMAGE
    workspace: Path
    preload: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    dind_image: str = DEFAULT_DIND_IMAGE
    docker_host: str | None = None
    control: Path | None = None
    # None: the image's ENTRYPOINT runs with COMMAND as its arguments (GitLab's Docker
    # executor); "": no entrypoint, COMMAND runs itself; else that program replaces it.
    entrypoint: str | None = None
    # dind: the nested daemon's data root is kept per KEY (its layer and build cache).
    cache: str | None = None
    # dind: the nested dockerd runs rootless (a rootless DinD image), or under that OCI runtime.
    rootless: bool = False
    unprivileged: bool = False  # with rootless: no --privileged (dind up --no-privileged)
    runtime: str | None = None

    @field_validator("command")
    @classmethod
    def _command(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("give the job's command after `--`, e.g. `-- sh pipeline.sh`")
        return value

    @field_validator("workspace")
    @classmethod
    def _workspace(cls, value: Path) -> Path:
        # The engine's bind syntax is SRC:DST:MODE; a colon in SRC cannot be expressed.
        if ":" in str(value) or not value.is_absolute():
            raise ValueError(f"the workspace must be an absolute path without ':' ({value})")
        return value

    @model_validator(mode="after")
    def _preload_only_for_dind(self) -> RunOptions:
        if self.preload and self.mode != "dind":
            raise ValueError(
                "--preload copies host images into a nested daemon: only with --mode dind "
                "(guarded and socket jobs use the host's images directly)"
            )
        if self.cache is not None and self.mode != "dind":
            raise ValueError(
                "--cache keeps a nested daemon's data root: only with --mode dind "
                "(guarded and socket jobs share the host's cache already)"
            )
        if (self.rootless or self.unprivileged or self.runtime) and self.mode != "dind":
            raise ValueError(
                "--rootless, --no-privileged and --runtime choose how a nested daemon runs: "
                "only with --mode dind"
            )
        if self.unprivileged and not self.rootless:
            raise ValueError("--no-privileged needs --rootless")
        return self

    @field_validator("image", "dind_image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"invalid image reference {value!r}")
        return value


def parse_env(items: tuple[str, ...], lookup: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """docker's `-e KEY=VALUE` and `-e KEY` (taken from this environment, skipped when unset)."""
    pairs: list[tuple[str, str]] = []
    for item in items:
        key, sep, value = item.partition("=")
        if not _ENV_NAME.fullmatch(key):
            raise ConfigError(f"--env {item!r}: expected KEY=VALUE or KEY")
        if key in WIRED:
            raise ConfigError(f"--env {key}: set by the mode; it wires the job to its Docker")
        if not sep:
            if key not in lookup:
                continue
            value = lookup[key]
        pairs.append((key, value))
    return tuple(pairs)


def make_options(**values: object) -> RunOptions:
    """RunOptions, with pydantic's complaints turned into one ConfigError line."""
    from pydantic import ValidationError

    try:
        return RunOptions.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        prefix = f"--{where}: " if where else ""
        raise ConfigError(f"{prefix}{message}") from None
