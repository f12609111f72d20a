"""The one small, flat exception hierarchy of dockmoat.

Components raise these; boundaries translate them: `http_status()` below is the
only place mapping them to HTTP statuses (the gateway), and `dockmoat.cli` is
the only place mapping them to CLI messages and exit codes.
"""

from __future__ import annotations


class DockmoatError(Exception):
    """Base of every error dockmoat raises on purpose."""

    exit_code = 1


class ConfigError(DockmoatError):
    """Bad configuration or command-line input; raised at start-up, before any work."""

    exit_code = 2


class ProtocolError(DockmoatError):
    """A request or response that cannot be read unambiguously (HTTP 400)."""


class BodyTooLarge(DockmoatError):
    """A body past the configured limit (HTTP 413)."""


class UpstreamError(DockmoatError):
    """The real daemon cannot be reached or answered garbage (HTTP 502)."""


class EngineError(DockmoatError):
    """A Docker engine operation done by dockmoat itself failed (dind, job, run)."""


class DeniedError(DockmoatError):
    """A request refused by policy (HTTP 403); `rule` is the stable rule id."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class NotFoundError(DockmoatError):
    """A resource that does not exist for this tenant (HTTP 404, Docker's wording)."""


_STATUS: dict[type[DockmoatError], int] = {
    ProtocolError: 400,
    DeniedError: 403,
    NotFoundError: 404,
    BodyTooLarge: 413,
    UpstreamError: 502,
}


def http_status(error: DockmoatError) -> int:
    """The HTTP status an error is answered with; 500 for anything unexpected."""
    for cls in type(error).__mro__:
        status = _STATUS.get(cls)
        if status is not None:
            return status
    return 500
