"""An `UpstreamClient` for decisions that must not look anything up."""

from __future__ import annotations

from collections.abc import Mapping


class NoUpstream:
    async def request(
        self, method: str, path: str, body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        raise AssertionError("nothing is looked up here")
