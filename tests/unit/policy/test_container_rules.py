"""Each container rule: the dangerous forms (every spelling) denied, the legitimate allowed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from create_bodies import CREATE, hc, top

from dockmoat.api.request import ApiRequest
from dockmoat.policy.decision import Allow, Deny, Rewrite
from dockmoat.policy.engine import CompiledPolicy, load_policy

Decide = Callable[..., Any]
MakeRequest = Callable[..., ApiRequest]

DANGEROUS = [
    ("containers.privileged", hc(Privileged=True)),
    ("containers.privileged", top(Privileged=True)),
    ("containers.privileged", {"Image": "b", "hostconfig": {"PRIVILEGED": True}}),
    (
        "containers.privileged",
        {"Image": "b", "HostConfig": {"Privileged": True}, "Privileged": False},
    ),
    ("containers.host-namespaces", hc(NetworkMode="host")),
    ("containers.host-namespaces", hc(PidMode="host")),
    ("containers.host-namespaces", hc(IpcMode="host")),
    ("containers.host-namespaces", hc(UTSMode="host")),
    ("containers.host-namespaces", hc(UsernsMode="host")),
    ("containers.host-namespaces", hc(CgroupnsMode="host")),
    ("containers.host-namespaces", top(pidmode="host")),
    ("containers.namespace-joins", hc(NetworkMode="container:abc")),
    ("containers.namespace-joins", hc(PidMode="container:abc")),
    ("containers.namespace-joins", hc(IpcMode="container:abc")),
    ("containers.namespace-joins", hc(Cgroup="container:abc")),
    ("containers.volumes-from", hc(VolumesFrom=["other"])),
    ("containers.links", hc(Links=["other:alias"])),
    (
        "containers.links",
        {
            "Image": "b",
            "HostConfig": {"PidsLimit": 1},
            "NetworkingConfig": {"EndpointsConfig": {"n": {"Links": ["o:a"]}}},
        },
    ),
    ("containers.capabilities", hc(CapAdd=["SYS_ADMIN"])),
    ("containers.capabilities", hc(CapAdd=["cap_sys_admin"])),
    ("containers.capabilities", hc(CapAdd=["\u017fys_admin"])),  # long s uppercases to S
    ("containers.capabilities", hc(CapAdd=["ALL"])),
    ("containers.capabilities", hc(CapAdd=["all"])),
    ("containers.capabilities", hc(CapAdd=["NET_ADMIN"])),
    ("containers.capabilities", hc(CapAdd=["DAC_READ_SEARCH"])),
    ("containers.capabilities", hc(CapAdd=["BPF"])),
    ("containers.capabilities", hc(CapAdd=["PERFMON"])),
    ("containers.capabilities", hc(CapAdd=["SYS_PTRACE"])),
    # Go's StrSlice: one string is a list of one (dockerd applies it).
    ("containers.capabilities", hc(CapAdd="SYS_ADMIN")),
    ("containers.capabilities", top(CapAdd="NET_ADMIN")),
    ("containers.capabilities", top(capadd=["SYS_MODULE"])),
    ("containers.capabilities", hc(Capabilities=["CAP_SYS_ADMIN"])),
    ("containers.devices", hc(Devices=[{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda"}])),
    ("containers.devices", hc(DeviceCgroupRules=["a *:* rwm"])),
    ("containers.devices", hc(DeviceRequests=[{"Count": -1}])),
    ("containers.confinement", hc(SecurityOpt=["seccomp=unconfined"])),
    ("containers.confinement", hc(SecurityOpt=["seccomp:unconfined"])),
    ("containers.confinement", hc(SecurityOpt=['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}'])),
    ("containers.confinement", hc(SecurityOpt=["apparmor=unconfined"])),
    ("containers.confinement", hc(SecurityOpt=["apparmor:unconfined"])),
    ("containers.confinement", hc(SecurityOpt=["label=disable"])),
    ("containers.confinement", hc(SecurityOpt=["label:disable"])),
    ("containers.confinement", hc(SecurityOpt=["disable"])),
    ("containers.confinement", hc(SecurityOpt=["label=type:spc_t"])),
    ("containers.confinement", hc(SecurityOpt=["systempaths=unconfined"])),
    ("containers.confinement", hc(MaskedPaths=[])),
    ("containers.confinement", hc(ReadonlyPaths=[])),
    ("containers.confinement", top(MaskedPaths=["/proc/kcore"])),
    ("containers.sysctls", hc(Sysctls={"kernel.core_pattern": "|/x"})),
    ("containers.sysctls", hc(Sysctls={"net.ipv4.ip_forward": "1"})),
    ("containers.sysctls", hc(Sysctls={"kernel/core_pattern": "|/x"})),
    ("containers.cgroup-parent", hc(CgroupParent="/")),
    ("containers.runtime", hc(Runtime="io.containerd.runtime.v1.linux")),
    ("containers.runtime", hc(Runtime="nvidia")),
    ("containers.log-driver", hc(LogConfig={"Type": "syslog", "Config": {}})),
    ("containers.log-driver", hc(LogConfig={"type": "gelf"})),
    ("containers.log-driver", hc(LogConfig={"Type": "fluentd"})),
    ("containers.proc-workdir", {**hc(), "WorkingDir": "/proc/self/fd/8"}),
    ("containers.proc-workdir", {**hc(), "WorkingDir": "//proc/self/fd/8"}),
    ("containers.proc-workdir", {**hc(), "workingdir": "/tmp/../proc/self/cwd"}),
    ("containers.bind-mounts", hc(Binds=["/:/host"])),
    ("containers.bind-mounts", hc(Binds=["/etc:/etc:ro"])),
    ("containers.bind-mounts", hc(Binds=["/var/run/docker.sock:/var/run/docker.sock"])),
    ("containers.bind-mounts", hc(Binds=["/var/run:/x"])),
    ("containers.bind-mounts", hc(Mounts=[{"Type": "bind", "Source": "/", "Target": "/h"}])),
    ("containers.bind-mounts", hc(mounts=[{"type": "bind", "source": "/etc", "target": "/h"}])),
    ("containers.bind-mounts", top(Binds=["/:/host"])),
    ("containers.bind-mounts", hc(Mounts=[{"Type": "npipe", "Source": "x", "Target": "/h"}])),
    (
        "volumes.host-path",
        hc(
            Mounts=[
                {
                    "Type": "volume",
                    "Source": "v",
                    "Target": "/v",
                    "VolumeOptions": {
                        "DriverConfig": {
                            "Name": "local",
                            "Options": {"type": "none", "o": "bind", "device": "/"},
                        }
                    },
                }
            ]
        ),
    ),
    ("volumes.driver", hc(VolumeDriver="some-plugin")),
    ("containers.published-ports", hc(PublishAllPorts=True)),
    ("containers.pids-limit", hc(PidsLimit=-1)),
    ("containers.pids-limit", top(PidsLimit=-1, HostConfig=None)),
    ("containers.pids-limit", {"Image": "b", "PidsLimit": -5, "HostConfig": {"PidsLimit": 10}}),
]


@pytest.mark.parametrize(("rule", "body"), DANGEROUS)
def test_dangerous_create_is_denied_by_its_rule(decide: Decide, rule: str, body: Any) -> None:
    decision = decide("POST", CREATE, body)
    assert isinstance(decision, Deny), decision
    assert decision.rule == rule
    assert decision.message.startswith(f"dockmoat: {rule}: ")
    assert decision.status == 403


def test_symlink_in_workspace_does_not_reach_the_host(decide: Decide, workspace: Path) -> None:
    (workspace / "escape").symlink_to("/")
    (workspace / "sock").symlink_to("/var/run/docker.sock")
    for source in (f"{workspace}/escape", f"{workspace}/escape/etc", f"{workspace}/sock"):
        decision = decide("POST", CREATE, hc(Binds=[f"{source}:/x"]))
        assert isinstance(decision, Deny) and decision.rule == "containers.bind-mounts", source
    decision = decide("POST", CREATE, hc(Binds=[f"{workspace}/../:/x"]))
    assert isinstance(decision, Deny)


def test_sibling_folder_with_a_common_prefix_is_outside(decide: Decide, workspace: Path) -> None:
    sibling = workspace.parent / (workspace.name + "2")
    sibling.mkdir()
    decision = decide("POST", CREATE, hc(Binds=[f"{sibling}:/x"]))
    assert isinstance(decision, Deny) and decision.rule == "containers.bind-mounts"


def test_socket_is_refused_even_inside_an_allowed_folder(make_request: MakeRequest) -> None:
    policy = load_policy(allow_bind=[Path("/")], env={})

    for source in ("/var/run/docker.sock", "/run", "/", "/run/docker"):
        decision = policy.evaluate(make_request("POST", CREATE, hc(Binds=[f"{source}:/x"])))
        assert isinstance(decision, Deny), source
    ok = policy.evaluate(make_request("POST", CREATE, hc(Binds=["/etc:/x:ro"])))
    assert isinstance(ok, Allow)


def _legit(workspace: Path) -> list[Any]:
    return [
        hc(),
        hc(Binds=[f"{workspace}:/workspace", "named-vol:/data", "/anon"]),
        hc(Binds=[f"{workspace}/sub/dir:/workspace:ro"]),
        hc(Mounts=[{"Type": "bind", "Source": str(workspace), "Target": "/w"}]),
        hc(Mounts=[{"Type": "volume", "Source": "v", "Target": "/v"}]),
        hc(Mounts=[{"Type": "tmpfs", "Target": "/t"}]),
        hc(CapAdd=["NET_RAW", "cap_chown", "net_bind_service"], CapDrop=["ALL"]),
        hc(CapAdd="NET_RAW", CapDrop="ALL"),  # StrSlice: one string, as dockerd takes it
        hc(SecurityOpt=["no-new-privileges", "label=level:s0:c100", "apparmor=docker-default"]),
        hc(Sysctls={"net.ipv4.ip_unprivileged_port_start": "0"}),
        hc(NetworkMode="bridge", IpcMode="private", PidMode="", UTSMode=""),
        hc(NetworkMode="my-network"),
        hc(LogConfig={"Type": "json-file", "Config": {"max-size": "10m"}}),
        hc(LogConfig={"Type": "local"}),
        hc(Runtime="runc"),
        hc(Devices=[], DeviceRequests=None),
        {**hc(), "WorkingDir": "/workspace", "User": "1000"},
        {**hc(), "WorkingDir": "/processes"},
        hc(PortBindings={"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}),
        hc(PortBindings={"80/tcp": [{"HostIp": "::1", "HostPort": "8080"}]}),
        hc(Tmpfs={"/run": "rw"}, Memory=64 * 1024 * 1024, ReadonlyRootfs=True),
    ]


def test_legitimate_creates_are_allowed(decide: Decide, workspace: Path) -> None:
    for body in _legit(workspace):
        decision = decide("POST", CREATE, body)
        assert isinstance(decision, Allow), (body, decision)


def test_ports_on_all_interfaces_are_rewritten_to_loopback(decide: Decide) -> None:
    body = hc(
        PortBindings={
            "80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"hostip": "0.0.0.0", "HostPort": "81"}],
            "53/udp": [{"HostPort": "5353"}],
            "22/tcp": [{"HostIp": "127.0.0.1", "HostPort": "2222"}],
        }
    )
    decision = decide("POST", CREATE, body)
    assert isinstance(decision, Rewrite) and decision.rule == "containers.published-ports"
    bindings = decision.body_json["HostConfig"]["PortBindings"]
    assert bindings["80/tcp"] == [
        {"HostIp": "127.0.0.1", "HostPort": "8080"},
        {"hostip": "127.0.0.1", "HostPort": "81"},
    ]
    assert bindings["53/udp"] == [{"HostPort": "5353", "HostIp": "127.0.0.1"}]
    assert bindings["22/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "2222"}]
    assert len(decision.notes) == 3
    assert body["HostConfig"]["PortBindings"]["80/tcp"][0]["HostIp"] == ""  # input untouched


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"Image": "b"}, None),
        ({"Image": "b", "HostConfig": {}}, "HostConfig"),
        ({"Image": "b", "HostConfig": {"PidsLimit": 0}}, "HostConfig"),
        ({"Image": "b", "HostConfig": {"PidsLimit": None}}, "HostConfig"),
        ({"Image": "b", "hostconfig": {"pidslimit": 0}}, "hostconfig"),
        ({"Image": "b", "Memory": 10000000}, None),
        ({"Image": "b", "HostConfig": None}, None),
    ],
)
def test_pids_limit_is_injected_where_dockerd_reads_it(
    decide: Decide, body: Any, where: str | None
) -> None:
    decision = decide("POST", CREATE, body)
    assert isinstance(decision, Rewrite)
    assert decision.rule == "containers.pids-limit,containers.cgroupns-private"
    holder = decision.body_json[where] if where else decision.body_json
    values = [v for k, v in holder.items() if k.lower() == "pidslimit"]
    assert values == [4096]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"Image": "b", "HostConfig": {"PidsLimit": 1}}, "HostConfig"),
        ({"Image": "b", "HostConfig": {"PidsLimit": 1, "CgroupnsMode": ""}}, "HostConfig"),
        ({"Image": "b", "PidsLimit": 1}, None),
        ({"Image": "b", "PidsLimit": 1, "HostConfig": None}, None),
        # Not merged by dockerd: the "HostConfig" object is the one it uses.
        ({"Image": "b", "CgroupnsMode": "private", "HostConfig": {"PidsLimit": 1}}, "HostConfig"),
        ({"Image": "b", "hostconfig": {"pidslimit": 1, "cgroupnsmode": ""}}, "hostconfig"),
    ],
)
def test_private_cgroupns_is_injected_where_dockerd_reads_it(
    decide: Decide, body: Any, where: str | None
) -> None:
    original = copy.deepcopy(body)
    decision = decide("POST", CREATE, body)
    assert isinstance(decision, Rewrite) and decision.rule == "containers.cgroupns-private"
    holder = decision.body_json[where] if where else decision.body_json
    assert [v for k, v in holder.items() if k.lower() == "cgroupnsmode"] == ["private"]
    assert body == original  # the client's body is not changed in place


def test_explicit_private_cgroupns_is_kept_and_host_refused(decide: Decide) -> None:
    assert isinstance(decide("POST", CREATE, hc(CgroupnsMode="private")), Allow)
    lower = {"Image": "b", "hostconfig": {"pidslimit": 1, "cgroupnsmode": "private"}}
    assert isinstance(decide("POST", CREATE, lower), Allow)
    decision = decide("POST", CREATE, hc(CgroupnsMode="host"))
    assert isinstance(decision, Deny) and decision.rule == "containers.host-namespaces"
    # Update has no CgroupnsMode: nothing is injected there.
    assert isinstance(decide("POST", "/v1.41/containers/abc/update", {"PidsLimit": 50}), Allow)


def test_update_refuses_unlimited_pids_and_devices(decide: Decide) -> None:
    target = "/v1.41/containers/abc/update"
    for value in (-1, 0):
        decision = decide("POST", target, {"PidsLimit": value})
        assert isinstance(decision, Deny) and decision.rule == "containers.pids-limit"
    decision = decide("POST", target, {"Devices": [{"PathOnHost": "/dev/mem"}]})
    assert isinstance(decision, Deny) and decision.rule == "containers.devices"
    decision = decide("POST", target, {"CgroupParent": "/"})
    assert isinstance(decision, Deny) and decision.rule == "containers.cgroup-parent"
    assert isinstance(decide("POST", target, {"Memory": 100000000, "PidsLimit": 50}), Allow)
    assert isinstance(decide("POST", target, {"RestartPolicy": {"Name": "always"}}), Allow)


def test_bad_shapes_are_denied_not_raised(decide: Decide) -> None:
    for body in (
        [1, 2],
        "str",
        {"Image": "b", "HostConfig": "x"},
        {"Image": "b", "HostConfig": {"Privileged": "true"}},
        {"Image": "b", "HostConfig": {"Binds": "/:/h"}},
        {"Image": "b", "HostConfig": {"Binds": ["/a:/b:c:d"]}},
        {"Image": "b", "HostConfig": {"PidsLimit": 1.5}},
        {"Image": "b", "HostConfig": {"PidsLimit": True}},
        {"Image": "b", "HostConfig": {"CapAdd": [1]}},
    ):
        decision = decide("POST", CREATE, body)
        assert isinstance(decision, Deny), body
    assert isinstance(decide("POST", CREATE, None), Deny)


def test_limits_from_the_policy_file(tmp_path: Path, make_request: MakeRequest) -> None:
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(
        "limits:\n  memory: {default: 256m, max: 1g}\n  cpus: {default: 1, max: 2}\n"
        "  pids: {default: 500, max: 1000}\n"
    )
    policy = load_policy(policy_file=policy_file, env={})

    def run(body: Any, target: str = CREATE) -> Any:
        return policy.evaluate(make_request("POST", target, body))

    decision = run({"Image": "b", "HostConfig": {}})
    assert isinstance(decision, Rewrite)
    assert decision.body_json["HostConfig"] == {
        "PidsLimit": 500,
        "Memory": 256 * 1024**2,
        "NanoCpus": 1_000_000_000,
        "CgroupnsMode": "private",
    }
    assert (
        run({"Image": "b", "HostConfig": {"Memory": 2 * 1024**3}}).rule == "containers.memory-limit"
    )
    assert run({"Image": "b", "HostConfig": {"NanoCpus": 3 * 10**9}}).rule == "containers.cpu-limit"
    assert (
        run({"Image": "b", "HostConfig": {"CpuQuota": 300000, "CpuPeriod": 100000}}).rule
        == "containers.cpu-limit"
    )
    assert run({"Image": "b", "HostConfig": {"PidsLimit": 5000}}).rule == "containers.pids-limit"
    quota = run({"Image": "b", "HostConfig": {"CpuQuota": 100000, "CpuPeriod": 100000}})
    assert isinstance(quota, Rewrite) and "NanoCpus" not in quota.body_json["HostConfig"]
    update = run({"Memory": 4 * 1024**3}, "/v1.41/containers/x/update")
    assert isinstance(update, Deny) and update.rule == "containers.memory-limit"


def test_restricted_profile(
    restricted: CompiledPolicy, workspace: Path, make_request: MakeRequest
) -> None:
    def run(body: Any) -> Any:
        return restricted.evaluate(make_request("POST", CREATE, body))

    good = {
        "Image": "b",
        "User": "1000:1000",
        "HostConfig": {
            "PidsLimit": 10,
            "CgroupnsMode": "private",
            "CapDrop": ["all"],
            "CapAdd": ["NET_BIND_SERVICE"],
            "SecurityOpt": ["no-new-privileges:true"],
        },
    }
    assert isinstance(run(good), Allow)
    one_string = {**good, "HostConfig": {**good["HostConfig"], "CapDrop": "ALL"}}
    assert isinstance(run(one_string), Allow)
    for change, rule in (
        ({"User": "root"}, "containers.non-root-user"),
        ({"User": "0:1000"}, "containers.non-root-user"),
        ({"User": "000"}, "containers.non-root-user"),
        ({"User": ""}, "containers.non-root-user"),
    ):
        assert run({**good, **change}).rule == rule
    host = good["HostConfig"]
    assert isinstance(host, dict)
    for host_change, rule in (
        ({"CapDrop": ["NET_RAW"]}, "containers.drop-all-caps"),
        ({"CapAdd": ["CHOWN"]}, "containers.drop-all-caps"),
        ({"CapAdd": "CHOWN"}, "containers.drop-all-caps"),
        ({"CapDrop": "NET_RAW"}, "containers.drop-all-caps"),
        ({"SecurityOpt": []}, "containers.no-new-privileges"),
        (
            {"SecurityOpt": ["no-new-privileges", "no-new-privileges=false"]},
            "containers.no-new-privileges",
        ),
        ({"Binds": [f"{workspace}:/w"]}, "containers.no-binds"),
    ):
        assert run({**good, "HostConfig": {**host, **host_change}}).rule == rule


def test_extra_protected_paths(tmp_path: Path, make_request: MakeRequest) -> None:
    sock_dir = tmp_path / "custom"
    sock_dir.mkdir()
    policy = load_policy(allow_bind=[tmp_path], env={}, protect=[str(sock_dir / "docker.sock")])
    for source in (str(sock_dir), str(sock_dir / "docker.sock"), str(tmp_path)):
        decision = policy.evaluate(make_request("POST", CREATE, hc(Binds=[f"{source}:/x"])))
        assert isinstance(decision, Deny), source
    other = tmp_path / "other"
    other.mkdir()
    ok = policy.evaluate(make_request("POST", CREATE, hc(Binds=[f"{other}:/x"])))
    assert isinstance(ok, Allow)
    env_policy = load_policy(
        allow_bind=[tmp_path], env={"DOCKER_HOST": f"unix://{sock_dir}/d.sock"}
    )
    decision = env_policy.evaluate(make_request("POST", CREATE, hc(Binds=[f"{sock_dir}:/x"])))
    assert isinstance(decision, Deny)
