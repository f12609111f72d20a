"""`dockmoat serve` as a real subprocess in front of the real engine."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gwserve import Served, start_serve


@pytest.fixture
def serve(tmp_path: Path, docker_host: str) -> Iterator[Callable[..., Served]]:
    """`serve("--profile", "permissive")` starts a gateway on a fresh unix socket."""
    started: list[Served] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Served:
        served = start_serve(tmp_path / f"gw{len(started)}", docker_host, *args, env=env)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


@pytest.fixture(scope="module")
def permissive(tmp_path_factory: pytest.TempPathFactory, docker_host: str) -> Iterator[Served]:
    """One permissive gateway shared by a module's tests."""
    served = start_serve(
        tmp_path_factory.mktemp("permissive"), docker_host, "--profile", "permissive"
    )
    yield served
    assert served.stop() == 0


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory, docker_host: str) -> Iterator[Served]:
    """The default serve with tenancy on: its listener is the tenant `ciday<hex>`."""
    served = start_serve(
        tmp_path_factory.mktemp("tenant"), docker_host, tenant=f"ciday{secrets.token_hex(3)}"
    )
    yield served
    assert served.stop() == 0


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, docker_host: str) -> Iterator[Served]:
    """One gateway with the default (baseline) profile shared by a module's tests."""
    served = start_serve(tmp_path_factory.mktemp("baseline"), docker_host)
    yield served
    assert served.stop() == 0
