"""`uses:` steps: Docker and BuildKit endpoints handed to actions through `with:`.

Any input holding a plain-TCP Docker endpoint is judged like a variable; the
docker/setup-buildx-action `remote` driver on a `tcp://` endpoint without client
certificates (`driver-opts: cacert=...,cert=...,key=...`) is BuildKit on plain TCP.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dockmoat.ci.audit import rules
from dockmoat.ci.audit import yamlsrc as y
from dockmoat.ci.audit.exposure import setting_hit, tls_configured
from dockmoat.ci.audit.findings import Hit


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
