"""Job names and the per-job name space.

A job's `docker run --name db` becomes `<job>--db` on the engine and reads
back as `db`. Job names may not contain `--` (nor end in `-`), so the first
`--` in an engine name always ends the prefix: `a--b--c` belongs to job `a`
and nobody else can own a prefix that parses differently.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dockmoat.errors import ConfigError

SEPARATOR = "--"
# Container, volume and network names allow [a-zA-Z0-9][a-zA-Z0-9_.-]*; a job
# name must also be usable in a socket file name and an image repository, so
# it is lowercase and, for the prefix to parse, free of "--".
_JOB_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_.]|-(?!-))*$")
MAX_JOB_NAME = 48


def validate_job_name(job: str) -> str:
    """Return `job` when it is a valid job name, else raise ConfigError saying why."""
    if not job or len(job) > MAX_JOB_NAME:
        raise ConfigError(f"job name must be 1 to {MAX_JOB_NAME} characters, got {job!r}")
    if not _JOB_RE.match(job) or job.endswith("-"):
        raise ConfigError(
            f"invalid job name {job!r}: use lowercase letters, digits, '.', '_' and single '-' "
            "(no '--', not starting or ending with '-')"
        )
    return job


_SLUG_DROP = re.compile(r"[^a-z0-9_.]+")
_MAX_SLUG = 30


def listener_tenant_name(address: str, readable: str) -> str:
    """The tenant of a listener that names none: `<readable>-<8 hex of address>`.

    `address` is the listener's canonical address ("unix:/run/dockmoat/docker.sock",
    "tcp:127.0.0.1:2375"), so the name is the same after every restart (ownership
    in the state db and the labels on the engine stay valid) and two listeners
    never share one by accident. `readable` (the socket's file name, or host and
    port) only helps a human recognise the prefix on the engine.
    """
    digest = hashlib.sha256(address.encode()).hexdigest()[:8]
    slug = _SLUG_DROP.sub("-", readable.lower()).strip("-._")[:_MAX_SLUG].rstrip("-._")
    slug = re.sub(r"-{2,}", "-", slug)
    return validate_job_name(f"{slug or 'listener'}-{digest}")


def certificate_cn(peercert: Mapping[str, Any] | None) -> str | None:
    """The one commonName of a client certificate (as `ssl` returns it), else None.

    A certificate with no CN or with several is not usable as a tenant: None.
    """
    if not peercert:
        return None
    names = [
        value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "commonName"
    ]
    if len(names) != 1 or not isinstance(names[0], str):
        return None
    return names[0]


@dataclass(frozen=True, slots=True)
class Namespace:
    """The name space of one tenant on the shared engine.

    `prefix` is "" for a tenant that does not get one (names are then used as
    they are and a collision is the engine's ordinary "name in use" error).
    """

    prefix: str = ""

    @classmethod
    def for_job(cls, job: str) -> Namespace:
        return cls(prefix=validate_job_name(job) + SEPARATOR)

    def engine_name(self, name: str) -> str:
        """The engine-side name of a name the tenant chose (a leading '/' is kept)."""
        if name.startswith("/"):
            return "/" + self.prefix + name[1:]
        return self.prefix + name

    def owns_name(self, engine_name: str) -> bool:
        """Whether an engine-side name is in this name space."""
        if not self.prefix:
            return False
        return engine_name.lstrip("/").startswith(self.prefix)

    def client_name(self, engine_name: str) -> str:
        """The name the tenant sees for an engine-side name (prefix removed)."""
        if not self.prefix:
            return engine_name
        slash = "/" if engine_name.startswith("/") else ""
        bare = engine_name[len(slash) :]
        if bare.startswith(self.prefix):
            return slash + bare[len(self.prefix) :]
        return engine_name

    def client_path_name(self, engine_name: str) -> str:
        """A container name as listed in `Names`: "/a/b" (a link) has both parts stripped."""
        if not engine_name.startswith("/"):
            return self.client_name(engine_name)
        return "/".join(self.client_name(part) for part in engine_name.split("/"))

    def name_filter(self, pattern: str) -> str:
        """A `name=` list filter (a regular expression on "/name") made to match in this space."""
        if not self.prefix:
            return pattern
        escaped = re.escape(self.prefix)
        if pattern.startswith("^/"):
            return "^/" + escaped + pattern[2:]
        if pattern.startswith("^"):
            return "^/?" + escaped + pattern[1:]
        return pattern
