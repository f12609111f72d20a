"""A format-neutral view of the containers a CI file asks for.

Each format (compose, GitLab, GitHub, Jenkins) is read into `Container` values;
the checks in `checks.py` then judge all formats alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

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
    command_word_lines: list[int] | None = None  # per word, when written as a list
    privileged_line: int | None = None
    runtime: str | None = None
    env: dict[str, Located] = field(default_factory=dict)
    # Variables inherited from an enclosing scope (workflow env, GitLab globals).
    inherited_env: dict[str, Located] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    network: Located | None = None
    pid: Located | None = None
    ipc: Located | None = None
    ports: list[Located] = field(default_factory=list)  # published port specs
    # None: the format cannot express it here, so it is not judged.
    limits: set[str] | None = None
    health: bool | None = None
    depends_on: dict[str, Located] | None = None  # target -> condition ("" when none)
    check_image: bool = True
    # The CI system replaces the image's command with the job's shell (job images).
    job: bool = False
    # The image's own entrypoint runs before the job's commands (GitLab, compose); GitHub
    # and Jenkins job containers replace it.
    image_entrypoint: bool = True
    # The service builds its image here (compose `build:`): its tag is not a pull.
    builds: bool = False
    # Variables that `${VAR}` in the image reference resolves against (GitLab variables).
    image_vars: dict[str, str] = field(default_factory=dict)

    @cached_property
    def role(self) -> Role:
        """Computed once: a container is complete before anything asks what it is."""
        image = self.image.value if self.image else None
        return classify(image, self.command, frozenset(self.env), job=self.job)

    def var(self, name: str) -> Located | None:
        return self.env.get(name) or self.inherited_env.get(name)
