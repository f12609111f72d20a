"""DindManager's answers to the engine's errors, against a fake API raising the SDK's
real exceptions: which become EngineError/NotFoundError/ConfigError with what message,
and which the manager handles itself (already gone, not there yet, pull it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import docker
import docker.errors
import pytest
import requests

from dockmoat.dind import acquire, inventory, launch, naming, resources
from dockmoat.dind.manager import DindManager
from dockmoat.dind.resources import Made
from dockmoat.dind.spec import DindOptions
from dockmoat.errors import ConfigError, EngineError, NotFoundError


def api_error(
    status: int, explanation: str, cls: type[docker.errors.APIError] = docker.errors.APIError
) -> docker.errors.APIError:
    answer = requests.Response()
    answer.status_code = status
    return cls(f"{status} Client Error", response=answer, explanation=explanation)


def missing(explanation: str) -> docker.errors.APIError:
    return api_error(404, explanation, docker.errors.NotFound)


def no_image(image: str) -> docker.errors.APIError:
    return api_error(404, f"No such image: {image}", docker.errors.ImageNotFound)


class FakeAPI:
    """The APIClient calls the manager makes; `fail[method]` is raised when set."""

    def __init__(self, **fail: Exception | Callable[..., Any]) -> None:
        self.fail = fail
        self.calls: list[str] = []

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(method)
            outcome = self.fail.get(method)
            if isinstance(outcome, Exception):
                raise outcome
            if outcome is not None:
                return outcome(*args, **kwargs)
            return {"Id": "c1", "Config": {}}

        return call


def manager(tmp_path: Path, api: FakeAPI) -> DindManager:
    client = cast(docker.DockerClient, SimpleNamespace(api=api, close=lambda: None))
    return DindManager(
        host="unix:///nonexistent.sock",
        state_dir=tmp_path / "state",
        docker_config=tmp_path / "docker",
        client=client,
    )


def daemon_details(name: str, instance: str = "i1") -> dict[str, Any]:
    return {
        "Id": "c1",
        "Name": f"/{naming.container_name(name)}",
        "Config": {
            "Labels": {naming.LABEL_ROLE: naming.ROLE_DAEMON, naming.LABEL_INSTANCE: instance}
        },
        "State": {"Status": "running"},
    }


# ---------------------------------------------------------------- queries


def test_no_such_daemon_is_not_found(tmp_path: Path) -> None:
    api = FakeAPI(inspect_container=missing("No such container: dockmoat-dind-x"))
    with pytest.raises(NotFoundError, match=r"^no dind daemon named x$"):
        manager(tmp_path, api).info("x")


def test_inspect_failing_is_an_engine_error(tmp_path: Path) -> None:
    api = FakeAPI(inspect_container=api_error(500, "engine is shutting down\nmore"))
    with pytest.raises(EngineError, match=r"^cannot inspect x: engine is shutting down$"):
        manager(tmp_path, api).info("x")


# ---------------------------------------------------------------- down


def test_down_skips_what_is_already_gone(tmp_path: Path) -> None:
    api = FakeAPI(
        inspect_container=lambda *_a, **_k: daemon_details("x"),
        remove_container=missing("No such container: c1"),
        remove_network=missing("network not found"),
        remove_volume=missing("no such volume"),
    )
    assert manager(tmp_path, api).down("x") == []
    assert {"remove_container", "remove_network", "remove_volume"} <= set(api.calls)


def test_down_says_what_it_cannot_remove(tmp_path: Path) -> None:
    api = FakeAPI(
        inspect_container=lambda *_a, **_k: daemon_details("x"),
        remove_network=api_error(409, "error while removing network: has active endpoints"),
    )
    network = naming.network_name("i1")
    with pytest.raises(
        EngineError,
        match=rf"^cannot remove network {network}: error while removing network: has active",
    ):
        manager(tmp_path, api).down("x")
    assert "remove_volume" not in api.calls


def test_down_of_a_container_it_cannot_remove(tmp_path: Path) -> None:
    api = FakeAPI(
        inspect_container=lambda *_a, **_k: daemon_details("x"),
        remove_container=requests.ConnectionError("('Connection aborted.', 'reset')"),
    )
    with pytest.raises(EngineError, match=r"^cannot remove dockmoat-dind-x: \('Connection"):
        manager(tmp_path, api).down("x")


# ---------------------------------------------------------------- up's checks


def test_a_free_name(tmp_path: Path) -> None:
    api = FakeAPI(inspect_container=missing("No such container"))
    launch.check_free(manager(tmp_path, api), "x")


def test_a_taken_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="already exists"):
        launch.check_free(manager(tmp_path, FakeAPI()), "x")


def test_a_name_that_cannot_be_checked(tmp_path: Path) -> None:
    api = FakeAPI(inspect_container=api_error(500, "boom"))
    with pytest.raises(EngineError, match=r"^cannot inspect containers: boom$"):
        launch.check_free(manager(tmp_path, api), "x")


def test_a_missing_image_is_not_pulled_unasked(tmp_path: Path) -> None:
    api = FakeAPI(inspect_image=no_image("docker:dind"))
    with pytest.raises(EngineError, match=r"^image docker:dind is not on the engine"):
        manager(tmp_path, api).check_images(DindOptions(image="docker:dind"))
    assert "pull" not in api.calls


def test_a_pull_that_fails(tmp_path: Path) -> None:
    api = FakeAPI(inspect_image=no_image("docker:dind"), pull=api_error(500, "toomanyrequests"))
    with pytest.raises(EngineError, match=r"^cannot pull docker:dind: toomanyrequests$"):
        manager(tmp_path, api).check_images(DindOptions(image="docker:dind"), pull=True)


def test_an_image_that_cannot_be_inspected(tmp_path: Path) -> None:
    api = FakeAPI(inspect_image=api_error(500, "boom"))
    with pytest.raises(EngineError, match=r"^cannot inspect image docker:dind: boom$"):
        manager(tmp_path, api).check_images(DindOptions(image="docker:dind"))


def test_a_missing_preload(tmp_path: Path) -> None:
    def inspect_image(image: str) -> dict[str, Any]:
        if image == "busybox:nope":
            raise no_image(image)
        return {"Config": {"Entrypoint": ["dockerd-entrypoint.sh"]}}

    api = FakeAPI(inspect_image=inspect_image)
    options = DindOptions(image="docker:dind", preload=("busybox:nope",))
    with pytest.raises(
        EngineError, match=r"^--preload busybox:nope: no such image on the host engine$"
    ):
        manager(tmp_path, api).check_images(options)


BAD_NAME = r"^invalid dind name 'a/b': use 1-63 letters"
SHELL_ENTRYPOINT = ["/bin/sh", "-c", "dockerd"]


def test_a_bad_name_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=BAD_NAME):
        launch.up(manager(tmp_path, FakeAPI()), "a/b", DindOptions())
    with pytest.raises(ConfigError, match=BAD_NAME):
        inventory.daemon(manager(tmp_path, FakeAPI()), "a/b")
    with pytest.raises(ConfigError, match=BAD_NAME):
        acquire.take_warm("a/b", DindOptions(), None, tmp_path / "pool.sock", print)


def test_an_image_whose_entrypoint_loses_tls(tmp_path: Path) -> None:
    api = FakeAPI(inspect_image=lambda image: {"Config": {"Entrypoint": SHELL_ENTRYPOINT}})
    with pytest.raises(ConfigError, match=r"^docker:dind: the image's entrypoint \[.*shell"):
        manager(tmp_path, api).check_images(DindOptions(image="docker:dind"))
    with pytest.raises(ConfigError, match=r"^img: the image's entrypoint \[.*shell"):
        resources.create(
            manager(tmp_path, FakeAPI()),
            DindOptions(image="img", mtu=1500),
            Made("i1"),
            "dockmoat-dind-tmp",
            "me",
            {},
            None,
            SHELL_ENTRYPOINT,
        )


def test_not_found_at_create_is_retried_once_then_an_engine_error(tmp_path: Path) -> None:
    """create_container leaves NotFound to create (the network may not be there yet)."""
    api = FakeAPI(create_container_from_config=missing("network dockmoat-x not found"))
    with pytest.raises(EngineError, match=r"^cannot create the daemon container: network"):
        resources.create(
            manager(tmp_path, api),
            DindOptions(mtu=1500),
            Made("i1"),
            "dockmoat-dind-tmp",
            "me",
            {},
            None,
            ["x"],
        )
    assert api.calls.count("create_container_from_config") == 2
    assert "create_network" in api.calls


# ---------------------------------------------------------------- assign


def test_assign_to_a_taken_name(tmp_path: Path) -> None:
    api = FakeAPI(rename=api_error(409, "Conflict. The name is already in use"))
    with pytest.raises(ConfigError, match=r"^a dind daemon named x already exists$"):
        manager(tmp_path, api).assign("c1", "x")


def test_assign_failing(tmp_path: Path) -> None:
    api = FakeAPI(rename=api_error(500, "boom\ngoroutine 1"))
    with pytest.raises(EngineError, match=r"^cannot rename the daemon container: boom$"):
        manager(tmp_path, api).assign("c1", "x")


def test_up_renaming_to_a_name_taken_meanwhile(tmp_path: Path) -> None:
    api = FakeAPI(rename=api_error(409, "Conflict. The name is already in use"))
    with pytest.raises(
        ConfigError, match=r"^a dind daemon named x already exists \(created meanwhile\)$"
    ):
        launch.rename(manager(tmp_path, api), "c1", "x", taken=" (created meanwhile)")
