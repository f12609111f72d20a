"""Fixtures: one `dockmoat serve` subprocess per module, and uniquely named jobs on it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tenancy_helpers import Job, Serve, job_name


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, docker_host: str) -> Iterator[Serve]:
    root = Path(tmp_path_factory.mktemp("tenancy"))
    server = Serve(root=root, upstream=docker_host)
    server.start()
    yield server
    # Close whatever a failed test left open, then stop.
    if server.proc is not None and server.proc.poll() is None:
        listed = server.job("ls", "--format", "json", check=False)
        if listed.returncode == 0:
            for job in json.loads(listed.stdout):
                server.job("close", job["job"], check=False)
    server.stop()


@pytest.fixture
def open_job(serve: Serve) -> Iterator[Callable[..., Job]]:
    """`open_job("a")` opens a uniquely named job; closed after the test if still open."""
    jobs: list[Job] = []

    def make(role: str, *extra: str) -> Job:
        job = serve.open_job(job_name(role), *extra)
        jobs.append(job)
        return job

    yield make
    for job in jobs:
        if not job.closed:
            serve.job("close", job.name, check=False)
