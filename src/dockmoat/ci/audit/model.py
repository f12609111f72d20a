"""A format-neutral view of the containers a CI file asks for.

Each format (compose, GitLab, GitHub, Jenkins) is read into `Container` values;
the checks in `checks.py` then judge all formats alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dockmoat.ci.audit.images import Role, classify
from dockmoat.ci.audit.mounts import Mount


@dataclass(frozen=True)
class Located:
    """A value with the 1-based line it was written on."""

    value: str
    line: int


@dataclass
class Container:
    label: str  # how messages name it: "service 'dind'", "job 'build' image"
    line: int
    hostname: str | None = None  # the name other containers reach it by
    image: Located | None = None
    command: list[str] = field(default_factory=list)
    command_line: int | None = None
    privileged_line: int | None = None
    runtime: str | None = None
    env: dict[str, Located] = field(default_factory=dict)
    # Variables inherited from an enclosing scope (workflow env, GitLab globals).
    inherited_env: dict[str, Located] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    network: Located | None = None
    pid: Located | None = None
    # None: the format cannot express it here, so it is not judged.
    limits: set[str] | None = None
    health: bool | None = None
    depends_on: dict[str, Located] | None = None  # target -> condition ("" when none)
    check_image: bool = True

    @property
    def role(self) -> Role:
        return classify(self.image.value if self.image else None, self.command)

    def var(self, name: str) -> Located | None:
        return self.env.get(name) or self.inherited_env.get(name)
