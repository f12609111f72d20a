"""One `dockmoat run`: set up the mode, run the job, always clean up, report the times."""

from __future__ import annotations

import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from types import FrameType
from typing import BinaryIO

import docker

from dockmoat.ci.runner import modes
from dockmoat.ci.runner.job import JobContainer
from dockmoat.ci.runner.options import RunOptions
from dockmoat.ci.runner.plan import Wiring, job_spec, summary
from dockmoat.sdkerrors import engine_errors

Progress = Callable[[str], None]
INTERRUPTED = 130
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Interrupted(BaseException):
    """SIGTERM during set-up: unwind like Ctrl-C so that clean-up runs."""


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise _Interrupted


@contextmanager
def _handlers(handler: Callable[[int, FrameType | None], object] | int) -> Iterator[None]:
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    for s in _SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def _wiring(
    options: RunOptions, run_id: str, progress: Progress, socket_path: str | None
) -> AbstractContextManager[Wiring]:
    if socket_path is not None:
        return modes.socket_mode(socket_path)
    if options.mode == "dind":
        return modes.dind_mode(options, run_id, progress)
    return modes.guarded_mode(options, run_id, progress)


def run(
    options: RunOptions,
    *,
    stdout: BinaryIO | None = None,
    stderr: BinaryIO | None = None,
    progress: Progress | None = None,
) -> int:
    """Run the job; return its exit code (130 when interrupted before it ended).

    Everything set up is registered on one ExitStack at once, so clean-up runs on
    success, failure, Ctrl-C and SIGTERM, with both signals ignored meanwhile.
    """
    out = stdout or sys.stdout.buffer
    err = stderr or sys.stderr.buffer
    say = progress or _silent

    def tell(message: str) -> None:
        err.write(message.encode() + b"\n")
        err.flush()

    run_id = secrets.token_hex(4)
    url = modes.engine_url(options)
    # A bad address is a usage error, before any engine call.
    socket_path = modes.host_socket_path(url) if options.mode == "socket" else None
    with engine_errors(f"cannot reach the Docker engine at {url}"):
        api = docker.APIClient(base_url=url, version="auto", timeout=120)
    started = time.monotonic()
    setup_s = job_s = 0.0
    code: int | None = None
    stack = ExitStack()
    # Outside the job, SIGINT and SIGTERM unwind (so that clean-up runs) instead of
    # ending the process; during the job they are forwarded to it.
    with _handlers(_raise_interrupted):
        try:
            # Fail before setting anything up when the job's image is missing.
            JobContainer(api, job_spec(options, run_id, Wiring(env={}))).check_image()
            wiring = stack.enter_context(_wiring(options, run_id, say, socket_path))
            if wiring.notice:
                tell(wiring.notice)
            job = JobContainer(api, job_spec(options, run_id, wiring))
            stack.callback(job.remove)
            say(f"starting the job in {options.image}")
            job.create()
            setup_s = time.monotonic() - started
            with _handlers(lambda signum, _frame: job.forward(signum)):
                code = job.run(out, err)
            job_s = time.monotonic() - started - setup_s
        except (KeyboardInterrupt, _Interrupted):
            if code is None:
                code = INTERRUPTED
            if not setup_s:
                setup_s = time.monotonic() - started
        finally:
            cleanup_started = time.monotonic()
            try:
                # No second Ctrl-C may cut the clean-up short.
                with _handlers(signal.SIG_IGN):
                    say("cleaning up")
                    stack.close()
            finally:
                api.close()
            if code is not None:
                cleanup_s = time.monotonic() - cleanup_started
                tell(summary(options.mode, code, setup_s, job_s, cleanup_s))
    return INTERRUPTED if code is None else code


def _silent(_message: str) -> None:
    pass
