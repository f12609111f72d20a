"""The dockmoat images, built once per session from this repository (scripts/build-image).

The build is cached by the digest of its inputs (a label on the images), so a session
whose inputs did not change reuses them; a change in src/ rebuilds only the top layers.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator

import pytest
from deploysupport import ROOT, VERSION_TAG, Images


@pytest.fixture(scope="session")
def deploy_images(docker_host: str) -> Images:
    done = subprocess.run(
        [str(ROOT / "scripts/build-image")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, f"scripts/build-image failed:\n{done.stderr[-4000:]}"
    return Images(
        guard=f"dockmoat/dockmoat:{VERSION_TAG}",
        dind=f"dockmoat/dind:{VERSION_TAG}",
        cli=f"dockmoat/docker-cli:{VERSION_TAG}",
    )


@pytest.fixture
def project() -> Iterator[str]:
    """A unique compose project name; whatever it made is removed afterwards."""
    name = f"dmdeploy{secrets.token_hex(4)}"
    yield name
    subprocess.run(
        ["docker", "compose", "-p", name, "down", "--volumes", "--remove-orphans", "-t", "3"],
        capture_output=True,
        check=False,
        timeout=120,
    )
