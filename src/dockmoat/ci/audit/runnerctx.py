"""What the runner configs given in the same run grant: the context other files are judged in.

A `docker:dind` service in `.gitlab-ci.yml` is only as dangerous as the runner that
runs it: a runner that makes every job container privileged makes it high, a runner
that grants privileged mode to nobody makes it a service that cannot start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Grant(StrEnum):
    ALL = "all"  # every job container and service runs privileged
    SERVICES = "services"  # only services (possibly only allowed images)
    NONE = "none"


@dataclass(frozen=True)
class RunnerGrant:
    file: str
    line: int
    name: str  # the runner's `name`, or its position
    grant: Grant


@dataclass
class AuditContext:
    """Facts from other files of the same run."""

    gitlab_runners: list[RunnerGrant] = field(default_factory=list)

    def worst_gitlab_grant(self) -> RunnerGrant | None:
        order = [Grant.ALL, Grant.SERVICES, Grant.NONE]
        ranked = sorted(self.gitlab_runners, key=lambda r: order.index(r.grant))
        return ranked[0] if ranked else None
