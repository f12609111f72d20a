"""The job container on the engine: create (never pull), attach, start, stream, wait, remove."""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Mapping
from typing import BinaryIO

import docker
import docker.errors

from dockmoat.ci.runner.plan import JobSpec
from dockmoat.errors import EngineError
from dockmoat.sdkerrors import SDK_ERRORS, engine_errors

KILL_AFTER = 3


class JobContainer:
    """One job container; `forward` may be called from a signal handler."""

    def __init__(self, api: docker.APIClient, spec: JobSpec) -> None:
        self.api = api
        self.spec = spec
        self.id: str | None = None
        # Signal handlers only enqueue (SimpleQueue.put is reentrant); a thread calls the engine.
        self._signals: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._forwarder: threading.Thread | None = None
        self._received = 0

    def check_image(self) -> None:
        try:
            with engine_errors(f"cannot inspect image {self.spec.image}",
                               leave=(docker.errors.ImageNotFound,)):  # fmt: skip
                self.api.inspect_image(self.spec.image)  # type: ignore[no-untyped-call]
        except docker.errors.ImageNotFound:
            raise EngineError(
                f"image {self.spec.image} is not on the engine and dockmoat run never pulls: "
                "load it (`docker load`) or pass another --image"
            ) from None

    def create(self) -> None:
        spec = self.spec
        binds: dict[str, Mapping[str, str]] = dict(spec.binds)
        host_config = self.api.create_host_config(
            binds=binds,
            # An init as PID 1 passes signals on and reaps; a bare `sh` as PID 1 ignores SIGTERM.
            init=True,
            network_mode=spec.network,
        )
        with engine_errors("cannot create the job container"):
            created = self.api.create_container(
                spec.image,
                command=spec.command,
                entrypoint=spec.entrypoint,
                name=spec.name,
                environment=spec.env,
                working_dir=spec.working_dir,
                labels=spec.labels,
                host_config=host_config,
                stdin_open=False,
                tty=False,
            )
        self.id = str(created["Id"])

    def run(self, stdout: BinaryIO, stderr: BinaryIO) -> int:
        """Start, stream both outputs until the job ends, and return its exit code."""
        assert self.id
        self._forwarder = threading.Thread(target=self._forward_loop, daemon=True)
        self._forwarder.start()
        try:
            with engine_errors("the job container failed"):
                # Attached before start, so no early output is lost.
                stream = self.api.attach(
                    self.id, stdout=True, stderr=True, stream=True, logs=True, demux=True
                )
                self.api.start(self.id)
                for out, err in stream:
                    if out:
                        stdout.write(out)
                        stdout.flush()
                    if err:
                        stderr.write(err)
                        stderr.flush()
                result = self.api.wait(self.id)
        finally:
            self._signals.put(None)
        return int(result.get("StatusCode", 1))

    def forward(self, signum: int) -> None:
        """Called from a signal handler: pass the signal on to the job.

        The third signal kills the job outright, for jobs that ignore the polite ones.
        """
        self._received += 1
        self._signals.put(signal.SIGKILL if self._received >= KILL_AFTER else signum)

    def _forward_loop(self) -> None:
        while True:
            signum = self._signals.get()
            if signum is None or self.id is None:
                return
            try:
                self.api.kill(self.id, signal=signum)
            except SDK_ERRORS:
                continue  # the job may have ended meanwhile

    def remove(self) -> None:
        if self.id is None:
            return
        try:
            with engine_errors(f"cannot remove the job container {self.spec.name}",
                               leave=(docker.errors.NotFound,)):  # fmt: skip
                self.api.remove_container(self.id, force=True, v=True)
        except docker.errors.NotFound:
            pass  # gone already
        self.id = None
