"""Rules on exec create (`POST /containers/{id}/exec`)."""

from __future__ import annotations

from dockmoat.policy.decision import Decision
from dockmoat.policy.rules.base import ALLOW, RESTRICTED, Rule, Subject, deny, flag, text, top
from dockmoat.policy.rules.containers import is_root_user, proc_path

EXEC = frozenset({"containers.exec"})


def check_privileged(subject: Subject) -> Decision:
    if flag(top(subject), "Privileged", ""):
        return deny(
            "exec.privileged",
            "a privileged exec (Privileged: true)",
            "Run the command unprivileged",
        )
    return ALLOW


def check_proc_workdir(subject: Subject) -> Decision:
    value = text(top(subject), "WorkingDir", "")
    if value and proc_path(value):
        return deny(
            "exec.proc-workdir",
            f"the working directory {value!r} under /proc (CVE-2024-21626)",
            "Use a working directory inside the container's own filesystem",
        )
    return ALLOW


def check_non_root_user(subject: Subject) -> Decision:
    # An empty User runs as the container's user, which the restricted create already
    # made non-root; only an explicit root is refused.
    user = text(top(subject), "User", "") or ""
    if user and is_root_user(user):
        return deny(
            "exec.non-root-user",
            f"an exec as {user!r}",
            "Leave User empty (the container's user) or name a non-root user",
        )
    return ALLOW


RULES: tuple[Rule, ...] = (
    Rule(
        "exec.privileged",
        "exec",
        EXEC,
        "A privileged exec gets every capability and device, even in an unprivileged container.",
        check_privileged,
    ),
    Rule(
        "exec.proc-workdir",
        "exec",
        EXEC,
        "A working directory under /proc leaks host file descriptors (CVE-2024-21626).",
        check_proc_workdir,
    ),
    Rule(
        "exec.non-root-user",
        "exec",
        EXEC,
        "An exec as root undoes the restricted profile's non-root container user.",
        check_non_root_user,
        profiles=RESTRICTED,
    ),
)
