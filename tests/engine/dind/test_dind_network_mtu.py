"""The networks a job creates in the nested daemon get the nested daemon's MTU, not
dockerd's default 1500 (`--mtu` sets only docker0's): on this machine's 1400 uplink a
compose network at 1500 drops large packets. Engines without
`--default-network-opt` (20.10) still start."""

from __future__ import annotations

from collections.abc import Callable

import docker
from dindtest_support import Dind

from dockmoat.dind import spec
from dockmoat.dind.resources import NETWORK_OPT_FACT
from dockmoat.netinfo import host_uplink
from harness.images import dind_tag


def _default_mtu(dind: Dind) -> int:
    bridge = dind.client.api.inspect_network("bridge")
    mtu = int((bridge.get("Options") or {}).get("com.docker.network.driver.mtu", 1500))
    uplink = host_uplink()
    return min(mtu, uplink[1]) if uplink is not None else mtu


def _nested_network_mtu(dind: Dind, info: object, network: str) -> str:
    dind.docker(info, "network", "create", network)
    return dind.docker(
        info,
        "network",
        "inspect",
        network,
        "--format",
        '{{index .Options "com.docker.network.driver.mtu"}}',
    ).stdout.strip()


def test_a_jobs_own_networks_get_the_nested_mtu(dind: Dind, dind_name: Callable[[], str]) -> None:
    mtu = _default_mtu(dind)
    # On a host whose way out is 1500 wide, ask for a smaller one: the default is 1500.
    info = dind.up(dind_name()) if mtu != 1500 else dind.up(dind_name(), mtu=(mtu := 1400))
    assert _nested_network_mtu(dind, info, "dmtest-jobnet") == str(mtu)
    docker0 = dind.docker(
        info, "network", "inspect", "bridge", "--format", "{{json .Options}}"
    ).stdout
    assert f'"com.docker.network.driver.mtu":"{mtu}"' in docker0
    # The wrapper asked the image's dockerd once; the next daemon of the image is told.
    image_id = dind.client.images.get(dind.image).id
    assert dind.manager.state.image_fact(image_id, NETWORK_OPT_FACT) == "yes"
    second = dind.up(dind_name(), mtu=mtu)
    env = dind.client.api.inspect_container(second.container_id)["Config"]["Env"]
    assert f"{spec.NETWORK_OPT_ENV}=yes" in env
    logs = dind.client.api.logs(second.container_id, stdout=False, stderr=True)
    assert spec.network_opt_from_log(logs) is None  # not asked again
    assert _nested_network_mtu(dind, second, "dmtest-jobnet2") == str(mtu)


def test_an_engine_without_default_network_opts_still_starts(
    dind: Dind, dind_name: Callable[[], str], docker_client: docker.DockerClient
) -> None:
    old = dind_tag("20.10")
    docker_client.images.get(old)  # the harness builds it (docs/testing.md)
    dind.image = old
    info = dind.up(dind_name(), mtu=1400)
    assert dind.docker(info, "version", "--format", "{{.Server.Version}}").stdout.startswith(
        "20.10"
    )
    # 20.10 cannot give its networks a default MTU: they keep dockerd's own default.
    assert _nested_network_mtu(dind, info, "dmtest-jobnet") in ("", "1500")
    image_id = docker_client.images.get(old).id
    assert dind.manager.state.image_fact(image_id, NETWORK_OPT_FACT) == "no"
