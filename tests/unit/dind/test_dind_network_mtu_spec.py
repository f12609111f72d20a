"""The wrapper learns the nested MTU for job networks only when it is not dockerd's 1500."""

from __future__ import annotations

import pytest
from dind_helpers import container_config

from dockmoat.dind import spec


@pytest.mark.parametrize(("mtu", "expected"), [(1500, None), (1400, "1400"), (9000, "9000")])
def test_network_mtu_env(mtu: int, expected: str | None) -> None:
    config = container_config(mtu)
    env = [e for e in config["Env"] if e.startswith(f"{spec.NETWORK_MTU_ENV}=")]
    assert env == ([f"{spec.NETWORK_MTU_ENV}={expected}"] if expected else [])
    # The flag is added only by the wrapper, after asking dockerd whether it knows it.
    assert "--default-network-opt" not in " ".join(config["Cmd"])
    assert "--default-network-opt" in spec.RECEIVE_CERTS
