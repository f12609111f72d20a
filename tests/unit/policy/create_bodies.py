"""Container create bodies for the policy's unit tests."""

from __future__ import annotations

from typing import Any

CREATE = "/v1.41/containers/create"


def hc(**fields: Any) -> dict[str, Any]:
    """A create body; the fields the policy would otherwise inject are set."""
    return {
        "Image": "busybox",
        "HostConfig": {"PidsLimit": 100, "CgroupnsMode": "private", **fields},
    }


def top(**fields: Any) -> dict[str, Any]:
    """HostConfig fields at the top level: dockerd reads them there too."""
    return {"Image": "busybox", "PidsLimit": 100, "CgroupnsMode": "private", **fields}
