"""Helpers shared by the dind unit tests (imported as a top-level module, as pytest puts
this folder on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dockmoat.dind import spec
from dockmoat.dind.info import DindInfo


def container_config(mtu: int, network_opt: bool | None = None) -> dict[str, Any]:
    """The container config of instance `ci-1-abcd` of image `img`, no labels."""
    return spec.container_config(
        spec.DindOptions(image="img"),
        instance="ci-1-abcd",
        network="n",
        image_entrypoint=[],
        volume="v",
        mtu=mtu,
        container_labels={},
        volume_labels={},
        network_opt=network_opt,
    )


def warm_info(number: int, cache: str | None = None) -> DindInfo:
    """The DindInfo of the `number`th warm instance a fake manager launched."""
    return DindInfo(
        name=f"pool-{number}",
        instance=f"pool-{number}",
        container_id=f"c{number}",
        network="n",
        address="10.0.0.2",
        port=1000 + number,
        cert_path=Path("/nonexistent"),
        cache=cache,
    )
