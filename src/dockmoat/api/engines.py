"""What the guard knows of the engine behind it, and where engines read requests differently.

The gateway asks the upstream's `GET /version` at start and after every reconnect
(`gateway/upstream.py`) and keeps the answer as an `EngineVersion`. Decisions that
depend on the engine read it from there; everything here is pure.

Where engines differ, as far as a decision depends on it (verified on Engine 20.10.24,
API 1.41; Engine 26.1.5, API 1.45, nested; Engine 28.5.2, API 1.51):

- the oldest API version served: 20.10 serves down to 1.12, 26.1 and 28.5 to 1.24
  (below it they answer 400); the guard refuses below `max(1.24, MinAPIVersion)`;
- HostConfig fields at the top level of a create body: 20.10 and 26.1 read them (when
  "HostConfig" is absent or null; 20.10 merges five of them otherwise), 28.5 ignores
  them (`reads_legacy_host_config`);
- data after the JSON body: 20.10 ignores it, 26.1 and 28.5 answer 400 (the guard
  refuses it on every engine, api/gojson.py);
- the reported NetworkMode of a container created without one: `default` on 20.10,
  `bridge` on 26.1 and 28.5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from dockmoat.api.reference import NEWEST_MODELED, OLDEST_MODELED, Version

#: The oldest engine API known to ignore top-level HostConfig fields (28.5); 26.1 (API
#: 1.45) still reads them. Between 1.46 and 1.50 it is not verified: the guard assumes
#: they are read (the policy checks them; tenancy refuses them on every engine).
LEGACY_HOST_CONFIG_IGNORED_FROM: Final[Version] = (1, 51)


@dataclass(frozen=True, slots=True)
class EngineVersion:
    """The upstream's `GET /version`: engine version, newest and oldest API it serves."""

    engine: str
    api: Version
    min_api: Version

    @property
    def newer_than_modeled(self) -> bool:
        return self.api > NEWEST_MODELED

    @property
    def oldest_forwarded(self) -> Version:
        """The oldest API version the guard forwards to this engine."""
        return max(OLDEST_MODELED, self.min_api)

    @property
    def reads_legacy_host_config(self) -> bool:
        return self.api < LEGACY_HOST_CONFIG_IGNORED_FROM

    def describe(self) -> str:
        return (
            f"Docker Engine {self.engine} (API {show(self.api)}, oldest API {show(self.min_api)})"
        )


def show(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


def parse_api_version(text: str) -> Version | None:
    """ "1.51" -> (1, 51); odd spellings the router accepts ("1.41.", "01.041") too."""
    parts = [part for part in text.strip().split(".") if part != ""]
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        return None
    return int(parts[0]), int(parts[1])


def from_version_answer(raw: bytes) -> EngineVersion:
    """An `EngineVersion` from a `/version` answer; ValueError when it is not one."""
    answer = json.loads(raw)
    if not isinstance(answer, dict):
        raise ValueError("the /version answer is not a JSON object")
    api = parse_api_version(str(answer.get("ApiVersion", "")))
    # Engines before 1.25 did not report MinAPIVersion; they served down to 1.12.
    minimum = parse_api_version(str(answer.get("MinAPIVersion", "1.12")))
    if api is None or minimum is None:
        raise ValueError(f"the /version answer has no usable ApiVersion: {raw[:200]!r}")
    return EngineVersion(str(answer.get("Version", "unknown")), api, minimum)


def start_message(engine: EngineVersion) -> tuple[bool, str]:
    """(is a warning, the line) that `serve` logs when it learns the upstream's version."""
    if engine.newer_than_modeled:
        return True, (
            f"upstream is {engine.describe()}, newer than API {show(NEWEST_MODELED)}, the "
            "newest dockmoat models: query parameters and body fields added since are "
            "refused (api.unmodeled) until dockmoat models them"
        )
    return False, f"upstream is {engine.describe()}"


def too_old(requested: str | None, engine: EngineVersion | None) -> Version | None:
    """The minimum the request's API version is below on this engine, else None.

    Only what the engine itself would refuse beyond `system.api-version`'s floor of
    1.24: an engine whose MinAPIVersion is newer answers such requests with 400, and
    the guard answers for it before anything is read further.
    """
    if requested is None or engine is None or engine.min_api <= OLDEST_MODELED:
        return None
    version = parse_api_version(requested)
    if version is None or version >= engine.min_api:
        return None
    return engine.min_api
