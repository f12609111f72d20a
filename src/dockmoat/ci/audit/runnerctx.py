"""What the runner configs given in the same run grant: the context other files are judged in.

A `docker:dind` service in `.gitlab-ci.yml` is only as dangerous as the runner that
runs it: a runner that makes every job container privileged makes it high, a runner
that grants privileged mode to nobody makes it a service that cannot start.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from enum import StrEnum


class Grant(StrEnum):
    ALL = "all"  # the job's own container runs privileged, and the service too
    SERVICES = "services"  # only the service (it matches allowed_privileged_services)
    NONE = "none"  # the service does not run privileged here: it cannot start


@dataclass(frozen=True)
class RunnerGrant:
    file: str
    line: int
    name: str  # the runner's `name`, or its position
    jobs_privileged: bool  # `privileged = true`
    services_privileged: bool  # `services_privileged`, else `privileged`
    allowed_services: tuple[str, ...] = ()  # `allowed_privileged_services`; empty: any

    def grant_for(self, image: str) -> Grant:
        """What this runner grants a service running `image`."""
        if not self.services_privileged or not _allowed(image, self.allowed_services):
            return Grant.NONE
        return Grant.ALL if self.jobs_privileged else Grant.SERVICES


def _allowed(image: str, patterns: tuple[str, ...]) -> bool:
    if not patterns:
        return True
    # GitLab compares with the full name; a Docker Hub short name has two spellings.
    names = {image}
    if "/" not in image.split(":", 1)[0]:
        names.add("docker.io/library/" + image)
    elif image.count("/") == 1 and "." not in image.split("/", 1)[0]:
        names.add("docker.io/" + image)
    return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)


@dataclass(frozen=True)
class ArcScaleSet:
    """An Actions Runner Controller scale set: jobs reach it by `runs-on: NAME`."""

    file: str
    line: int
    name: str  # `runnerScaleSetName`
    mode: str  # `containerMode.type`: "dind", "kubernetes" or "" (none)


@dataclass
class AuditContext:
    """Facts from other files of the same run."""

    gitlab_runners: list[RunnerGrant] = field(default_factory=list)
    arc_scale_sets: list[ArcScaleSet] = field(default_factory=list)

    def arc_dind_set(self, runs_on: list[str]) -> ArcScaleSet | None:
        """The DinD-mode scale set a job runs on, if one of those given."""
        for scale_set in self.arc_scale_sets:
            if scale_set.mode == "dind" and scale_set.name in runs_on:
                return scale_set
        return None

    def worst_gitlab_grant(self, image: str) -> tuple[RunnerGrant, Grant] | None:
        """The runner (of those given) that grants a service running `image` the most."""
        order = [Grant.ALL, Grant.SERVICES, Grant.NONE]
        ranked = sorted(
            ((r, r.grant_for(image)) for r in self.gitlab_runners),
            key=lambda pair: order.index(pair[1]),
        )
        return ranked[0] if ranked else None
