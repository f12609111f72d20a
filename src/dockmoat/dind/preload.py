"""Images into a nested daemon: `docker save` on the host engine streamed into
`docker load` on the nested one, over the daemon's mutual TLS."""

from __future__ import annotations

import docker
from docker.tls import TLSConfig

from dockmoat.dind.engine import Engine
from dockmoat.dind.info import DindInfo
from dockmoat.errors import EngineError
from dockmoat.sdkerrors import engine_errors


def nested_client(info: DindInfo) -> docker.APIClient:
    tls = TLSConfig(
        client_cert=(str(info.cert_path / "cert.pem"), str(info.cert_path / "key.pem")),
        ca_cert=str(info.cert_path / "ca.pem"),
        verify=True,
    )
    with engine_errors("cannot reach the nested daemon"):
        # The nested daemon's API is at least the host engine's era; a fixed
        # version spares a round trip (the SDK would ask /version first).
        nested = docker.APIClient(
            base_url=f"https://{info.host_url[len('tcp://') :]}",
            tls=tls,
            version="1.41",
            timeout=300,
        )
    # requests lets REQUESTS_CA_BUNDLE override the per-session CA: that would
    # verify the daemon against the system's CAs instead of ours.
    nested.trust_env = False
    return nested


def preload(engine: Engine, info: DindInfo, images: tuple[str, ...] | list[str]) -> None:
    """Stream `docker save` on the host engine into `docker load` nested (no temp file)."""
    nested = nested_client(info)
    try:
        with engine_errors("cannot preload"):
            for image in images:
                engine.progress(f"preloading {image}")
                stream = engine.api.get_image(image, chunk_size=1 << 20)
                for message in nested.load_image(stream):  # type: ignore[no-untyped-call]
                    if isinstance(message, dict) and message.get("error"):
                        raise EngineError(f"--preload {image}: {message['error']}")
    finally:
        nested.close()
