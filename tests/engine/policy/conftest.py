"""A real `dockmoat serve` (baseline, one allowed workspace) in front of the real engine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from policygw import Gateway, start_gateway, stop


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, docker_host: str) -> Iterator[Gateway]:
    served, process = start_gateway(tmp_path_factory.mktemp("policy-gw"), docker_host)
    yield served
    stop(process)
