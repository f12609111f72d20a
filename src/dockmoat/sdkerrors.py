"""Docker SDK errors, mapped where dockmoat calls the SDK: one place per boundary.

dockmoat's components raise its own small hierarchy (`dockmoat.errors`); the Docker
SDK (docker-py) raises another: `docker.errors.APIError` and its kin, and bare
`requests` errors when the engine goes away in the middle of a call. Errors are
mapped at boundaries, so code that calls the SDK wraps the call in

    with engine_errors("cannot create network N"):
        api.create_network(...)

and what escapes is an `EngineError` reading "cannot create network N: <the engine's
reason, one line>", the same way at every call site, instead of an `except` clause
per call that each spells the translation out again (and drift apart: the reason
taken from `explanation` here, from `str(error)` with the request's URL there).

- NotFound/ImageNotFound is an engine error like any other, unless the caller says
  otherwise: `not_found="no dind daemon named x"` maps it to `NotFoundError`, and
  `leave=(docker.errors.NotFound,)` lets it through to the caller's own `except`,
  for callers to whom a missing thing means something (already gone, pull it,
  create the network first). Whatever the caller does in such a branch stays there.
- The mapped error is raised `from None`: its message already says the engine's
  reason, and the SDK's chain (requests and urllib3 frames) is noise on a CLI line.
- dockmoat's own errors raised inside the block pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import docker.errors
import requests

from dockmoat.errors import EngineError, NotFoundError

# What a call into the SDK can end in besides its answer.
SDK_ERRORS: tuple[type[Exception], ...] = (
    docker.errors.DockerException,
    requests.RequestException,
)


def explain(error: BaseException) -> str:
    """Why an SDK call failed, in one line.

    The engine's own words (`APIError.explanation`) when it gave some, else the
    error's text; only its first non-blank line, stripped (a daemon's panic or a
    traceback below it is left out); the error's class name when all that is blank.
    """
    reason = error.explanation if isinstance(error, docker.errors.APIError) else None
    text = str(reason) if reason else str(error)
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


@contextmanager
def engine_errors(
    what: str,
    *,
    not_found: str | None = None,
    leave: tuple[type[docker.errors.DockerException], ...] = (),
) -> Iterator[None]:
    """Map the SDK errors raised in the block to `EngineError(f"{what}: {explain(error)}")`.

    `not_found`: the message of the `NotFoundError` a NotFound/ImageNotFound becomes
    (none: it is an engine error like any other). `leave`: SDK error classes the
    caller handles itself; they pass through unmapped.
    """
    try:
        yield
    except SDK_ERRORS as error:
        if isinstance(error, leave):
            raise
        if not_found is not None and isinstance(error, docker.errors.NotFound):
            raise NotFoundError(not_found) from None
        raise EngineError(f"{what}: {explain(error)}") from None
