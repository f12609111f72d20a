"""Exec, image, build, volume, network and endpoint rules."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dockmoat.api.request import ApiRequest
from dockmoat.policy.decision import Allow, Deny
from dockmoat.policy.engine import CompiledPolicy, load_policy

Decide = Callable[..., Any]
MakeRequest = Callable[..., ApiRequest]


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ({"Cmd": ["sh"], "Privileged": True}, "exec.privileged"),
        ({"Cmd": ["sh"], "privileged": True}, "exec.privileged"),
        ({"Cmd": ["sh"], "WorkingDir": "/proc/self/fd/7"}, "exec.proc-workdir"),
        ({"Cmd": ["sh"], "Privileged": "yes"}, "exec.privileged"),
    ],
)
def test_exec_create_denials(decide: Decide, body: Any, rule: str) -> None:
    decision = decide("POST", "/v1.41/containers/abc/exec", body)
    assert isinstance(decision, Deny) and decision.rule == rule


def test_exec_ordinary(decide: Decide, restricted: CompiledPolicy) -> None:
    body = {"Cmd": ["sh", "-c", "id"], "WorkingDir": "/workspace", "User": "root", "Tty": True}
    assert isinstance(decide("POST", "/v1.41/containers/abc/exec", body), Allow)
    assert (
        decide("POST", "/v1.41/containers/abc/exec", body, restricted).rule == "exec.non-root-user"
    )
    body["User"] = ""
    assert isinstance(decide("POST", "/v1.41/containers/abc/exec", body, restricted), Allow)
    assert isinstance(decide("POST", "/v1.41/exec/abc/start", {"Detach": False}), Allow)


@pytest.mark.parametrize(
    ("target", "rule"),
    [
        ("/v1.41/images/create?fromSrc=http://169.254.169.254/latest", "images.remote-fetch"),
        ("/v1.41/images/create?fromSrc=https://example.com/x.tar&repo=x", "images.remote-fetch"),
        ("/v1.41/images/create?fromImage=127.0.0.1:5000/x&tag=1", "images.registry-address"),
        ("/v1.41/images/create?fromImage=localhost:5000/x", "images.registry-address"),
        ("/v1.41/images/create?fromImage=10.1.2.3/x", "images.registry-address"),
        ("/v1.41/images/create?fromImage=169.254.169.254/x", "images.registry-address"),
        ("/v1.41/images/create?fromImage=[::1]:5000/x", "images.registry-address"),
        ("/v1.41/images/create?fromImage=0x7f000001:80/x", "images.registry-address"),
        ("/v1.41/images/create?fromImage=registry.internal/x", "images.registry-address"),
        ("/v1.41/images/localhost:5000/x/push", "images.registry-address"),
        ("/v1.41/distribution/192.168.1.1:5000/x/json", "images.registry-address"),
        ("/v1.41/build?networkmode=host", "build.network-host"),
        ("/v1.41/build?networkmode=container:abc", "build.network-host"),
        ("/v1.41/build?remote=https://github.com/x/y.git", "build.remote-context"),
        ("/v1.41/build?remote=http://127.0.0.1:8080/ctx.tar", "build.remote-context"),
        ("/v1.41/build?cgroupparent=/", "containers.cgroup-parent"),
        ('/v1.41/build?cachefrom=["127.0.0.1:5000/cache"]', "images.registry-address"),
        ("/v1.41/build?cachefrom=notjson", "images.registry-address"),
        ("/v1.41/plugins/pull?remote=x", "system.plugins"),
        ("/v1.41/plugins/create?name=x", "system.plugins"),
        ("/v1.41/swarm/init", "system.swarm"),
        ("/v1.41/services/create", "system.swarm"),
        ("/v1.41/secrets/create", "system.swarm"),
        ("/v1.41/configs/create", "system.swarm"),
        ("/v1.41/nodes/x/update", "system.swarm"),
        ("/v1.41/containers/x/bogus", "system.unknown-endpoint"),
        ("/v1.41/containers//json/../x", "system.unknown-endpoint"),
    ],
)
def test_query_level_denials(decide: Decide, target: str, rule: str) -> None:
    method = "GET" if "/distribution/" in target else "POST"
    decision = decide(method, target, b"{}" if "create" in target or "init" in target else None)
    assert isinstance(decision, Deny), decision
    assert decision.rule == rule


@pytest.mark.parametrize(
    "target",
    [
        "/v1.41/images/create?fromImage=busybox&tag=latest",
        "/v1.41/images/create?fromImage=ghcr.io/x/y&tag=1",
        "/v1.41/images/create?fromSrc=-&repo=x",
        "/v1.41/images/busybox/push",
        "/v1.41/build?t=x&networkmode=default&remote=client-session",
        "/v1.41/build?networkmode=my-net&dockerfile=Dockerfile",
        '/v1.41/build?cachefrom=["ghcr.io/x/cache"]',
        "/v1.41/images/x/tag?repo=y",
        "/v1.41/images/load",
        "/v1.41/containers/x/start",
        "/v1.41/containers/x/wait",
    ],
)
def test_ordinary_image_and_build_requests(decide: Decide, target: str) -> None:
    assert isinstance(decide("POST", target), Allow)


@pytest.mark.parametrize("target", ["/v1.41/session", "/grpc"])
def test_buildkit_tunnels_are_open_in_baseline_and_closed_in_restricted(
    decide: Decide, restricted: CompiledPolicy, target: str
) -> None:
    # baseline: open, every call inside is read (dockmoat.buildkit, build.* rules)
    assert isinstance(decide("POST", target), Allow)
    decision = decide("POST", target, policy=restricted)
    assert isinstance(decision, Deny)
    assert decision.rule == "system.session"


def test_allowlists_from_the_policy_file(tmp_path: Path, make_request: MakeRequest) -> None:
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(
        "registries: ['localhost:5000']\nfetch_targets: ['https://git.example.com/']\n"
        "runtimes: [runsc]\ndisable: [system.session, containers.links]\n"
    )
    policy = load_policy(policy_file=policy_file, env={})

    def run(method: str, target: str, body: Any = None) -> Any:
        return policy.evaluate(make_request(method, target, body))

    assert isinstance(run("POST", "/images/create?fromImage=localhost:5000/x"), Allow)
    assert isinstance(run("POST", "/build?remote=https://git.example.com/r.git"), Allow)
    assert isinstance(run("POST", "/build?remote=https://git.example.com.evil/r"), Deny)
    assert isinstance(run("POST", "/session"), Allow)
    body = {
        "Image": "b",
        "HostConfig": {
            "PidsLimit": 5,
            "CgroupnsMode": "private",
            "Runtime": "runsc",
            "Links": ["a:b"],
        },
    }
    assert isinstance(run("POST", "/containers/create", body), Allow)
    assert isinstance(run("POST", "/auth", {"ServerAddress": "localhost:5000"}), Allow)


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (
            {
                "Name": "v",
                "Driver": "local",
                "DriverOpts": {"type": "none", "o": "bind", "device": "/"},
            },
            "volumes.host-path",
        ),
        ({"Name": "v", "DriverOpts": {"o": "bind", "device": "/etc"}}, "volumes.host-path"),
        ({"Name": "v", "DriverOpts": {"device": "/dev/sda1", "type": "ext4"}}, "volumes.host-path"),
        (
            {"Name": "v", "DriverOpts": {"type": "nfs", "o": "addr=10.0.0.1", "device": ":/x"}},
            "volumes.host-path",
        ),
        (
            {"Name": "v", "driveropts": {"o": "rbind", "type": "tmpfs", "device": "/"}},
            "volumes.host-path",
        ),
        ({"Name": "v", "Driver": "vieux/sshfs"}, "volumes.driver"),
    ],
)
def test_volume_create_denials(decide: Decide, body: Any, rule: str) -> None:
    decision = decide("POST", "/v1.41/volumes/create", body)
    assert isinstance(decision, Deny) and decision.rule == rule


def test_volume_create_ordinary(decide: Decide) -> None:
    for body in (
        {"Name": "v"},
        {"Name": "v", "Driver": "local", "Labels": {"a": "b"}},
        {"Name": "v", "DriverOpts": {"type": "tmpfs", "device": "tmpfs", "o": "size=100m"}},
    ):
        assert isinstance(decide("POST", "/v1.41/volumes/create", body), Allow), body


def test_networks(decide: Decide) -> None:
    assert isinstance(decide("POST", "/v1.41/networks/create", {"Name": "n"}), Allow)
    assert isinstance(
        decide("POST", "/v1.41/networks/create", {"Name": "n", "Driver": "bridge"}), Allow
    )
    decision = decide("POST", "/v1.41/networks/create", {"Name": "n", "Driver": "macvlan"})
    assert isinstance(decision, Deny) and decision.rule == "networks.driver"


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("https://index.docker.io/v1/", True),
        ("ghcr.io", True),
        ("localhost:5000", False),
        ("http://127.0.0.1:5000", False),
        ("169.254.169.254", False),
        ("[fe80::1]:5000", False),
        ("http://[::ffff:10.0.0.1]/", False),
    ],
)
def test_auth_server_address(decide: Decide, address: str, allowed: bool) -> None:
    decision = decide("POST", "/v1.41/auth", {"username": "u", "ServerAddress": address})
    assert isinstance(decision, Allow) is allowed, decision
    if not allowed:
        assert decision.rule == "system.auth-address"


def test_permissive_allows_everything(make_request: MakeRequest) -> None:
    policy = load_policy("permissive", env={})
    for method, target, body in (
        ("POST", "/containers/create", {"Image": "b", "HostConfig": {"Privileged": True}}),
        ("POST", "/plugins/pull", None),
        ("GET", "/nonsense", None),
    ):
        decision = policy.evaluate(make_request(method, target, body))
        assert isinstance(decision, Allow) and decision.rule == "profile.permissive"
    assert not policy.body_needed(make_request("POST", "/containers/create", {}).route)


def test_body_needed(baseline: CompiledPolicy, make_request: MakeRequest) -> None:
    def needed(method: str, target: str) -> bool:
        return baseline.body_needed(make_request(method, target).route)

    assert needed("POST", "/containers/create")
    assert needed("POST", "/containers/x/update")
    assert needed("POST", "/containers/x/exec")
    assert needed("POST", "/volumes/create")
    assert needed("POST", "/networks/create")
    assert needed("POST", "/auth")
    assert needed("POST", "/commit?container=x")
    assert not needed("POST", "/build")
    assert not needed("POST", "/images/load")
    assert not needed("POST", "/images/create?fromSrc=-")
    assert not needed("PUT", "/containers/x/archive?path=/")
    assert not needed("POST", "/exec/x/start")


def test_rules_listing_is_complete_and_stable(baseline: CompiledPolicy) -> None:
    ids = [rule.id for rule in baseline.rules]
    assert len(ids) == len(set(ids))
    for rule in baseline.rules:
        assert rule.rationale.endswith(".") and "\n" not in rule.rationale
        assert rule.id.split(".")[0] in {
            "containers",
            "exec",
            "images",
            "build",
            "volumes",
            "networks",
            "system",
        }
    enabled = {rule.id for rule in baseline.rules if rule.enabled}
    assert "containers.no-binds" not in enabled
    assert {"containers.privileged", "containers.pids-limit", "system.plugins"} <= enabled


def test_derive_for_a_job(
    baseline: CompiledPolicy, tmp_path: Path, make_request: MakeRequest
) -> None:
    job_ws = tmp_path / "job"
    job_ws.mkdir()
    job = baseline.derive(allow_bind=[job_ws], disable=["containers.namespace-joins"])
    body = {
        "Image": "b",
        "HostConfig": {
            "PidsLimit": 1,
            "CgroupnsMode": "private",
            "Binds": [f"{job_ws}:/w"],
            "NetworkMode": "container:x",
        },
    }
    assert isinstance(job.evaluate(make_request("POST", "/containers/create", body)), Allow)
    assert isinstance(baseline.evaluate(make_request("POST", "/containers/create", body)), Deny)


def test_an_error_inside_a_rule_denies(baseline: CompiledPolicy, make_request: MakeRequest) -> None:
    body = {"Image": "b", "HostConfig": {"PidsLimit": 1, "Binds": ["/bad\x00path:/x"]}}
    decision = baseline.evaluate(
        make_request("POST", "/containers/create", json.loads(json.dumps(body)))
    )
    assert isinstance(decision, Deny) and decision.rule == "policy.error"


@pytest.mark.parametrize(
    ("target", "body", "allowed"),
    [
        ("/v1.41/commit?container=x&repo=r", None, True),
        ("/v1.41/commit?container=x&repo=r", {"WorkingDir": "/app", "Env": ["A=1"]}, True),
        ("/v1.41/commit?container=x&changes=WORKDIR%20/app&changes=ENV%20A=1", None, True),
        ("/v1.41/commit?container=x", {"WorkingDir": "/proc/self/fd/8"}, False),
        ("/v1.41/commit?container=x&changes=WORKDIR%20/proc/self/fd/8", None, False),
        ("/v1.41/commit?container=x&changes=workdir%20%22/proc/1/cwd%22", None, False),
        ("/v1.41/commit?container=x&changes=ENV%20D=/proc&changes=WORKDIR%20$D", None, False),
        ("/v1.41/images/create?fromSrc=-&changes=WORKDIR%20/proc/self/fd/7", None, False),
        ("/v1.41/images/create?fromSrc=-&changes=WORKDIR%20/srv", None, True),
    ],
)
def test_image_config_workdir(decide: Decide, target: str, body: Any, allowed: bool) -> None:
    decision = decide("POST", target, body)
    assert isinstance(decision, Allow) is allowed, decision
    if not allowed:
        assert decision.rule == "containers.proc-workdir"


def _service(spec: dict[str, Any], **task: Any) -> dict[str, Any]:
    return {"Name": "s", "TaskTemplate": {"ContainerSpec": {"Image": "b", **spec}, **task}}


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (
            _service({"Mounts": [{"Type": "bind", "Source": "/", "Target": "/h"}]}),
            "containers.bind-mounts",
        ),
        (_service({"CapabilityAdd": ["CAP_SYS_ADMIN"]}), "containers.capabilities"),
        (_service({"Sysctls": {"kernel.core_pattern": "x"}}), "containers.sysctls"),
        (_service({"Privileges": {"SELinuxContext": {"Disable": True}}}), "containers.confinement"),
        (_service({"Privileges": {"Seccomp": {"Mode": "unconfined"}}}), "containers.confinement"),
        (_service({"Dir": "/proc/self/fd/9"}), "containers.proc-workdir"),
        (_service({}, Networks=[{"Target": "host"}]), "containers.host-namespaces"),
        (
            _service(
                {
                    "Mounts": [
                        {
                            "Type": "volume",
                            "Target": "/v",
                            "VolumeOptions": {
                                "DriverConfig": {"Options": {"o": "bind", "device": "/"}}
                            },
                        }
                    ]
                }
            ),
            "volumes.host-path",
        ),
    ],
)
def test_service_specs_when_swarm_is_opened(
    make_request: MakeRequest, body: Any, rule: str
) -> None:
    policy = load_policy(env={}).derive(disable=["system.swarm"])
    decision = policy.evaluate(make_request("POST", "/v1.41/services/create", body))
    assert isinstance(decision, Deny) and decision.rule == rule, decision
    ok = policy.evaluate(make_request("POST", "/v1.41/services/create", _service({"Env": ["A=1"]})))
    assert isinstance(ok, Allow)
