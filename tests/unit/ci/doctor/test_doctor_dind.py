import json

from dockmoat.ci.doctor import checks_dind as d
from dockmoat.ci.doctor.facts import DindFacts
from dockmoat.ci.doctor.model import Status, fail, ok
from dockmoat.ci.doctor.render import to_json
from dockmoat.netinfo import default_route_iface

RUNNING = DindFacts(
    name="dind",
    found=True,
    running=True,
    status="running",
    privileged=True,
    mount_points=("/var/lib/docker",),
)

UNPRIVILEGED_LOGS = """\
time="2026-11-27T21:00:00Z" level=info msg="Starting up"
mount: permission denied (are you root?)
level=warning msg="Running iptables --wait -t nat -L -n failed: can't initialize iptables \
table `nat': Permission denied (you must be root)"
failed to start daemon: error initializing graphdriver: driver not supported
"""


def test_missing_stopped_and_running_containers() -> None:
    assert d.check_container(DindFacts(name="x", found=False)).status is Status.FAIL
    stopped = d.check_container(DindFacts(name="x", found=True, status="exited", exit_code=1))
    assert stopped.status is Status.FAIL and "exit code 1" in stopped.detail
    assert d.check_container(RUNNING).status is Status.OK


def test_privileges() -> None:
    assert d.check_privileges(RUNNING).status is Status.OK
    sysbox = DindFacts(name="x", found=True, runtime="sysbox-runc")
    assert d.check_privileges(sysbox).status is Status.OK
    plain = d.check_privileges(DindFacts(name="x", found=True, runtime="runc"))
    assert plain.status is Status.FAIL
    assert "--privileged" in (plain.fix or "") and "sysbox" in (plain.fix or "")


def test_log_lines_are_classified_most_specific_first() -> None:
    labels = [(p.label, line[:20]) for p, line in d.scan_logs(UNPRIVILEGED_LOGS)]
    assert [label for label, _ in labels] == ["iptables", "storage driver", "privileges"]
    findings = d.check_logs(DindFacts(name="x", found=True, logs=UNPRIVILEGED_LOGS))
    assert all(f.status is Status.FAIL for f in findings)
    assert "mount: permission denied" in findings[2].detail


def test_tls_and_port_lines_and_clean_logs() -> None:
    logs = (
        'could not read CA certificate "/certs/server/ca.pem": open: no such file\n'
        "listen tcp 0.0.0.0:2376: bind: address already in use\n"
    )
    assert [p.label for p, _ in d.scan_logs(logs)] == ["TLS", "port in use"]
    assert d.check_logs(RUNNING)[0].status is Status.OK
    # A running daemon that logged an error is degraded: a warning, not a failure.
    running = DindFacts(name="x", found=True, running=True, logs=logs)
    assert {f.status for f in d.check_logs(running)} == {Status.WARN}


def test_storage() -> None:
    assert d.check_storage(RUNNING).status is Status.OK
    bare = DindFacts(name="x", found=True)
    assert d.check_storage(bare).status is Status.WARN
    assert "-v x-data:/var/lib/docker" in (d.check_storage(bare).fix or "")
    vfs = DindFacts(name="x", found=True, nested_driver="vfs")
    assert "vfs" in d.check_storage(vfs).detail


def test_mtu_parsing() -> None:
    assert d.parse_mtus("lo 65536\neth0 1500\ndocker0 1500\n") == {
        "lo": 65536,
        "eth0": 1500,
        "docker0": 1500,
    }
    ip_link = (
        "1: lo: <LOOPBACK,UP> mtu 65536 qdisc noqueue\n"
        "7: eth0@if8: <BROADCAST,UP> mtu 1450 qdisc noqueue\n"
    )
    assert d.parse_mtus(ip_link) == {"lo": 65536, "eth0": 1450}
    routes = (
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\n"
        "eth1\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n"
    )
    assert default_route_iface(routes) == "eth1"
    assert default_route_iface("") is None


def _net(bridge: int, uplink: int) -> DindFacts:
    return DindFacts(
        name="dind",
        found=True,
        running=True,
        net_mtus=f"lo 65536\neth0 {uplink}\ndocker0 {bridge}\n",
        routes="",
    )


def test_mtu_check() -> None:
    too_big = d.check_mtu(_net(1500, 1450), None)
    assert too_big is not None and too_big.status is Status.FAIL
    assert "--mtu=1450" in (too_big.fix or "")
    fine = d.check_mtu(_net(1450, 1500), None)
    assert fine is not None and fine.status is Status.OK
    # The host's uplink is the limit when it is the narrower one.
    host_limited = d.check_mtu(_net(1500, 1500), ("eth0", 1400))
    assert host_limited is not None and host_limited.status is Status.WARN
    assert "the host's eth0" in host_limited.detail
    no_bridge = d.check_mtu(
        DindFacts(name="x", found=True, running=True, net_mtus="eth0 1500\n"), None
    )
    assert no_bridge is not None and no_bridge.status is Status.WARN
    assert d.check_mtu(DindFacts(name="x", found=True), None) is None


def test_json_is_a_list_of_check_status_detail_fix() -> None:
    data = json.loads(to_json([ok("a", "fine"), fail("b", "bad", "do this")]))
    assert data == [
        {"check": "a", "status": "ok", "detail": "fine", "fix": None},
        {"check": "b", "status": "fail", "detail": "bad", "fix": "do this"},
    ]
