"""The one small, flat exception hierarchy of dockmoat.

Components raise these; boundaries translate them: `http_status()` below is the
only place mapping them to HTTP statuses (the gateway), and `dockmoat.cli` is
the only place mapping them to CLI messages and exit codes.

Exit codes, the same for every command (docs/exit-codes.md):

- 1: the answer is no (a check failed, a finding, a denial, no such thing);
- 2: bad input: a flag, a file or a path given to dockmoat is wrong (and usage errors);
- 3: something dockmoat needs is unreachable or failed (the daemon, `dockmoat serve`);
- 70: a bug (an exception dockmoat did not expect), said in one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

EXIT_NO = 1
EXIT_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_BUG = 70


class DockmoatError(Exception):
    """Base of every error dockmoat raises on purpose."""

    exit_code = EXIT_NO


class ConfigError(DockmoatError):
    """Bad configuration or command-line input; raised at start-up, before any work."""

    exit_code = EXIT_INPUT


class ProtocolError(DockmoatError):
    """A request or response that cannot be read unambiguously (HTTP 400)."""


class BodyTooLarge(DockmoatError):
    """A body past the configured limit (HTTP 413)."""


class UpstreamError(DockmoatError):
    """The real daemon cannot be reached or answered garbage (HTTP 502)."""

    exit_code = EXIT_UNAVAILABLE


class StateError(DockmoatError):
    """The state database cannot be written (HTTP 503): what would change ownership waits."""

    exit_code = EXIT_UNAVAILABLE


class EngineError(DockmoatError):
    """A Docker engine operation done by dockmoat itself failed (dind, job, run), or the
    running `dockmoat serve` it talks to cannot be reached."""

    exit_code = EXIT_UNAVAILABLE


class NotFoundError(DockmoatError):
    """A resource that does not exist for this tenant (HTTP 404, Docker's wording)."""


@contextmanager
def config_errors(prefix: str = "") -> Iterator[None]:
    """Map a ValueError raised in the block to `ConfigError(f"{prefix}{error}")`.

    For the checks that must keep raising ValueError because another caller reads it
    as malformed data, not bad input (`naming.validate_name` parses the pool's answer
    too; `spec.daemon_command` builds the create body). Checks of input alone raise
    ConfigError themselves. Raised `from None`: the message says it all.
    """
    try:
        yield
    except ValueError as error:
        raise ConfigError(f"{prefix}{error}") from None


def error_for_exit(exit_code: int, message: str) -> DockmoatError:
    """An error of the class that ends the CLI with `exit_code` (a server's refusal
    carried over the job control socket)."""
    for cls in (DockmoatError, ConfigError, EngineError):
        if cls.exit_code == exit_code:
            return cls(message)
    return EngineError(message)


_STATUS: dict[type[DockmoatError], int] = {
    ProtocolError: 400,
    NotFoundError: 404,
    BodyTooLarge: 413,
    UpstreamError: 502,
    StateError: 503,
}


def http_status(error: DockmoatError) -> int:
    """The HTTP status an error is answered with; 500 for anything unexpected."""
    for cls in type(error).__mro__:
        status = _STATUS.get(cls)
        if status is not None:
            return status
    return 500


def answer_message(error: DockmoatError) -> str:
    """What a client reads when an error of ours answers its request."""
    if isinstance(error, ProtocolError):
        return f"dockmoat: bad request: {error}"
    return f"dockmoat: {error}"
