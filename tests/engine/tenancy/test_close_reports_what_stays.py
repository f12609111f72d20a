"""`job close` names a network it could not remove instead of leaving it without a word.

The soak suite (docs/soak.md) saw a closed job's network stay on the engine with
every `job close` answering success: a network delete refused by the daemon (403 "has
active endpoints", which a loaded daemon answers for a while after removing the last
container) was dropped silently. Here a container the job does not own (the host's)
holds an endpoint on the job's network for good: the close tries again, then says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import docker
import docker.errors
from tenancy_helpers import Job


def test_a_network_the_close_cannot_remove_is_named_in_kept(
    open_job: Callable[..., Job],
    docker_client: docker.DockerClient,
    busybox_image: str,
    unique_name: Callable[[str], str],
) -> None:
    job = open_job("keptnet")
    net = unique_name("net")
    assert job.docker("network", "create", net).returncode == 0
    (engine_net,) = [n for n in docker_client.networks.list() if n.name.endswith(f"--{net}")]
    # The host's own container on the job's network: not the job's, so the close
    # leaves it, and the daemon refuses to remove a network it is attached to.
    holder = docker_client.containers.run(
        busybox_image,
        ["sleep", "300"],
        name=unique_name("holder"),
        network=engine_net.id,
        detach=True,
        labels={"dockmoat-test": "holder"},
    )
    try:
        removed = job.close()
        assert any(entry.startswith(f"network {net} ") for entry in removed["kept"]), removed
        assert net not in removed["networks"], removed
    finally:
        holder.remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.networks.get(engine_net.id).remove()
