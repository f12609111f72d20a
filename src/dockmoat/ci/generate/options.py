"""The knobs of `dockmoat generate`, validated once so templates can trust them."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dockmoat import __version__


class System(StrEnum):
    GITLAB = "gitlab"
    GITHUB = "github"
    JENKINS = "jenkins"
    COMPOSE = "compose"


class Mode(StrEnum):
    DIND = "dind"
    GUARDED = "guarded"


# Image references and registry paths are pasted into YAML and Groovy; this pattern
# keeps out every character that could end a string or start a comment there.
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
_REGISTRY = re.compile(r"^[A-Za-z0-9$][A-Za-z0-9._/:${}-]*$")  # $VARS of the CI system
_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?[bkmgBKMG]?$")
_SOCKET = re.compile(r"^/[A-Za-z0-9._/-]+$")

DEFAULT_DIND_IMAGE = "docker:27.3.1-dind"
DEFAULT_JOB_IMAGE = "docker:27.3.1-cli"
DEFAULT_DOCKMOAT_IMAGE = f"dockmoat/dockmoat:{__version__}"


def image_reference(value: str) -> str:
    """`value` when it is an image reference safe to paste into YAML and Groovy."""
    if not _IMAGE.match(value):
        raise ValueError(f"not an image reference: {value!r}")
    return value


def _printable(ch: str) -> bool:
    """YAML 1.2's printable set, without tab: what every format here carries verbatim."""
    code = ord(ch)
    return (
        0x20 <= code <= 0x7E
        or 0xA0 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


class Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    system: System
    mode: Mode
    dind_image: str = DEFAULT_DIND_IMAGE
    job_image: str = DEFAULT_JOB_IMAGE
    dockmoat_image: str = DEFAULT_DOCKMOAT_IMAGE
    # Empty: the CI system's own registry (GitLab's, GitHub's ghcr.io), else an example.
    registry: str = ""
    image_name: str = "myapp"
    test_command: str = Field(default="npm test", min_length=1, max_length=1000)
    memory: str = "4g"
    cpus: float = Field(default=2.0, gt=0, le=1024)
    pids_limit: int = Field(default=4096, ge=64, le=4_194_304)
    socket: str = "/run/dockmoat/docker.sock"
    wait_seconds: int = Field(default=60, ge=5, le=3600)

    @field_validator("dind_image", "job_image", "dockmoat_image")
    @classmethod
    def _image(cls, value: str) -> str:
        return image_reference(value)

    @field_validator("registry", "image_name")
    @classmethod
    def _registry(cls, value: str) -> str:
        if value and not _REGISTRY.match(value):
            raise ValueError(f"not a registry path: {value!r}")
        return value.rstrip("/")

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not _MEMORY.match(value):
            raise ValueError(f"not a memory size like 4g or 512m: {value!r}")
        return value

    @field_validator("socket")
    @classmethod
    def _socket(cls, value: str) -> str:
        if not _SOCKET.match(value) or "/../" in value:
            raise ValueError(f"not an absolute socket path: {value!r}")
        return value

    @field_validator("test_command")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value or "\r" in value:
            raise ValueError("the test command must be one line")
        bad = [ch for ch in value if not _printable(ch)]
        if bad:
            raise ValueError(f"the test command holds a control character ({bad[0]!r})")
        return value

    @property
    def cpus_text(self) -> str:
        return f"{self.cpus:g}"

    @property
    def image_repo(self) -> str:
        """Where the pipeline's image goes, without its tag."""
        if self.registry:
            return f"{self.registry}/{self.image_name}"
        if self.system is System.GITLAB:
            return "$CI_REGISTRY_IMAGE"
        if self.system is System.GITHUB:
            return "ghcr.io/${{ github.repository }}"
        return f"registry.example.com/{self.image_name}"
