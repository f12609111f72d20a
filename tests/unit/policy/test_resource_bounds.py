"""containers.resource-bounds and volumes.cluster: fields that take from the host."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from create_bodies import CREATE, hc, top

from dockmoat.policy.decision import Deny

Decide = Callable[..., Any]

REFUSED = [
    {"OomScoreAdj": -1000},
    {"OomScoreAdj": -1},
    {"OomKillDisable": True},
    {"CpuShares": 262144},
    {"BlkioWeight": 1000},
    {"BlkioWeightDevice": [{"Path": "/dev/sda", "Weight": 1000}]},
    {"BlkioDeviceReadBps": [{"Path": "/etc/shadow", "Rate": 1}]},
    {"BlkioDeviceWriteIOps": [{"Path": "/dev/../home/x", "Rate": 1}]},
    {"BlkioDeviceReadIOps": [{"Path": "/dev/shm/other-jobs-file", "Rate": 1}]},
    {"BlkioWeightDevice": [{"Path": "/root/.ssh/id_rsa", "Weight": 10}]},
    {"CpuRealtimeRuntime": 950000},
    {"ShmSize": 64 * 1024**3},
    {"Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": -1}]},
    {"Ulimits": [{"Name": "NPROC", "Soft": 1 << 20, "Hard": 1 << 20}]},
    {"Ulimits": [{"Name": "rtprio", "Soft": 99, "Hard": 99}]},
    {"Ulimits": [{"Name": "memlock", "Soft": -1, "Hard": -1}]},
]
ALLOWED = [
    {"OomScoreAdj": 0},
    {"OomScoreAdj": 500},
    {"CpuShares": 512},
    {"BlkioWeight": 300},
    {"BlkioDeviceReadBps": [{"Path": "/dev/sda", "Rate": 1048576}]},
    {"BlkioDeviceWriteBps": [{"Path": "/dev/disk/by-id/nvme-x", "Rate": 1048576}]},
    {"ShmSize": 256 * 1024**2},
    {"Ulimits": [{"Name": "nofile", "Soft": 65536, "Hard": 65536}]},
    {"Ulimits": [{"Name": "core", "Soft": 0, "Hard": 0}]},
]


@pytest.mark.parametrize("fields", REFUSED)
def test_bounds_refuse_in_both_holders_and_on_update(
    decide: Decide, fields: dict[str, Any]
) -> None:
    for body in (hc(**fields), top(**fields)):
        decision = decide("POST", CREATE, body)
        assert isinstance(decision, Deny) and decision.rule == "containers.resource-bounds", body
    decision = decide("POST", "/v1.41/containers/x/update", fields)
    assert isinstance(decision, Deny) and decision.rule == "containers.resource-bounds"


@pytest.mark.parametrize("fields", ALLOWED)
def test_values_within_the_defaults_pass(decide: Decide, fields: dict[str, Any]) -> None:
    assert not isinstance(decide("POST", CREATE, hc(**fields)), Deny)


def test_build_ulimits_are_bounded(decide: Decide) -> None:
    bad = json.dumps([{"Name": "nofile", "Hard": -1, "Soft": -1}])
    decision = decide("POST", f"/v1.41/build?ulimits={bad}")
    assert isinstance(decision, Deny) and decision.rule == "containers.resource-bounds"
    assert not isinstance(decide("POST", "/v1.41/build?ulimits=null"), Deny)


def test_cluster_volumes_are_refused(decide: Decide) -> None:
    decision = decide("POST", "/v1.42/volumes/create", {"Name": "v", "ClusterVolumeSpec": {}})
    assert isinstance(decision, Deny) and decision.rule == "volumes.cluster"
    decision = decide("PUT", "/v1.42/volumes/v?version=1", {"Spec": {}})
    assert isinstance(decision, Deny) and decision.rule == "volumes.cluster"
    assert not isinstance(decide("POST", "/v1.42/volumes/create", {"Name": "v"}), Deny)
