"""GitLab `extends:`: the variables a job inherits from the jobs it extends."""

from __future__ import annotations

from typing import Any

from dockmoat.ci.audit import yamlsrc as y
from dockmoat.ci.audit.model import Located

# GitLab stops at 11 levels of `extends`; a cycle stops here too.
_MAX_DEPTH = 11


def job_vars(node: Any, line: int = 1) -> dict[str, Located]:
    return {k: Located(v, n) for k, (v, n) in y.env_vars(node, line).items()}


def extended_vars(root: Any, job: Any, depth: int = 0) -> dict[str, Located]:
    """Variables from `extends` (a name or a list; later ones win), deepest first."""
    names = job.get("extends")
    if isinstance(names, str):
        names = [names]
    out: dict[str, Located] = {}
    if not isinstance(names, list) or depth >= _MAX_DEPTH:
        return out
    for name in names:
        parent = y.mapping(root.get(name)) if isinstance(name, str) else None
        if parent is None:
            continue
        out.update(extended_vars(root, parent, depth + 1))
        out.update(job_vars(parent.get("variables"), y.key_line(parent, "variables", 1)))
    return out
