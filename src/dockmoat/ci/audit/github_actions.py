"""`uses:` steps: Docker and BuildKit endpoints handed to actions through `with:`.

Any input holding a plain-TCP Docker endpoint is judged like a variable; the
docker/setup-buildx-action `remote` driver on a `tcp://` endpoint without client
certificates (`driver-opts: cacert=...,cert=...,key=...`) is BuildKit on plain TCP.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from dockmoat.ci.audit import rules
from dockmoat.ci.audit import yamlsrc as y
from dockmoat.ci.audit.exposure import setting_hit, tls_configured
from dockmoat.ci.audit.findings import Hit, Severity
from dockmoat.ci.audit.runnerctx import ArcScaleSet


def action_input_hits(step: Any, line: int, label: str) -> Iterator[Hit]:
    inputs = y.mapping(step.get("with"))
    if inputs is None:
        return
    values = {str(k): y.scalar_str(v) or "" for k, v in inputs.items()}
    tls = tls_configured(values.items()) or "cacert=" in values.get("driver-opts", "")
    uses = (y.scalar_str(step.get("uses")) or "").lower()
    if uses.startswith("docker/setup-buildx-action") and values.get("driver") == "remote":
        endpoint = values.get("endpoint", "")
        if endpoint.lower().startswith("tcp://") and not tls:
            yield Hit(
                rules.BUILDKIT_PLAIN_TCP,
                y.key_line(inputs, "endpoint", line),
                f"{label}: setup-buildx-action remote driver on {endpoint} without "
                "client certificates",
            )
        return
    for key, value in values.items():
        hit = setting_hit(key, value, y.key_line(inputs, key, line), label, tls)
        if hit is not None:
            yield hit


def on_arc_dind(hit: Hit, scale_set: ArcScaleSet) -> Hit:
    """A job's privileged DinD daemon on an ARC scale set in DinD mode is root on the node.

    There it runs inside the runner pod's privileged DinD sidecar, not in a throw-away
    GitHub-hosted VM: `dind-privileged` becomes high.
    """
    if hit.rule is not rules.DIND_PRIVILEGED:
        return hit
    return replace(
        hit,
        severity=Severity.HIGH,
        message=f"{hit.message}, on ARC scale set {scale_set.name!r} "
        f"({scale_set.file}:{scale_set.line}) in containerMode dind: inside its privileged "
        "DinD sidecar, so root on the node",
    )
