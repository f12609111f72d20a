"""GitLab DinD services: judged with the runner configs of the same run, when given."""

from __future__ import annotations

from dockmoat.ci.audit import rules
from dockmoat.ci.audit.findings import Hit, Severity
from dockmoat.ci.audit.images import resolve
from dockmoat.ci.audit.model import Container
from dockmoat.ci.audit.runnerctx import AuditContext, Grant


def dind_service_hit(service: Container, context: AuditContext | None) -> Hit:
    line = service.image.line if service.image else service.line
    base = f"{service.label}: a DinD service needs a runner that runs it privileged"
    written = service.image.value if service.image else ""
    image = resolve(written, service.image_vars) or written
    worst = context.worst_gitlab_grant(image) if context else None
    if worst is None:
        return Hit(rules.GITLAB_DIND_SERVICE, line, base)
    runner, grant = worst
    where = f"runner {runner.name} ({runner.file}:{runner.line})"
    if grant is Grant.ALL:
        return Hit(
            rules.GITLAB_DIND_SERVICE,
            line,
            f"{base}; {where} makes every job container privileged, so this job's own "
            "script is root on the host too",
            severity=Severity.HIGH,
        )
    if grant is Grant.SERVICES:
        return Hit(
            rules.GITLAB_DIND_SERVICE,
            line,
            f"{base}; {where} grants privileged mode to services only",
        )
    return Hit(
        rules.GITLAB_DIND_SERVICE,
        line,
        f"{base}; no runner given ({where}) runs this image privileged, so it cannot start there",
        severity=Severity.LOW,
    )
