"""Which build and load requests are read, streamed unread, or refused before they go on
(pipeline.body_reader), for a policy alone and with tenancy."""

from __future__ import annotations

import pytest

from dockmoat.api.bodies import BodyUnreadable, BuildContextReader
from dockmoat.gateway.pipeline import body_reader
from dockmoat.gateway.stages import Stage
from dockmoat.policy.engine import load_policy
from dockmoat.policy.trial import routed

POLICY = load_policy("baseline", env={})
TENANCY = Stage()  # only "is there a stage" matters here


def reader(target: str, stage: Stage | None = None) -> object:
    return body_reader(routed("POST", target, "test"), POLICY, stage)


def test_a_classic_context_is_read() -> None:
    assert isinstance(reader("/v1.41/build?t=x"), BuildContextReader)


def test_a_session_build_streams_nothing_and_is_checked_at_once() -> None:
    session = "/v1.41/build?version=2&remote=client-session&session=s1"
    assert reader(session) is None  # its Dockerfile is read from the session
    assert reader(session, TENANCY) is None


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("/v1.41/build?version=2", "request body"),
        (
            "/v1.41/build?version=2&remote=client-session&session=s1"
            '&buildargs={"BUILDKIT_SYNTAX":"x/y"}',
            "custom frontend",
        ),
        ("/v1.41/build?version=2&remote=client-session&dockerfile=../Dockerfile", "plain"),
        ("/v1.41/build?version=2&remote=client-session&dockerfile=./Dockerfile", "plain"),
    ],
)
def test_what_cannot_be_read_is_refused_before_it_goes_on(target: str, why: str) -> None:
    with pytest.raises(BodyUnreadable, match=why):
        reader(target)


@pytest.mark.parametrize("version", ["", "&version=2"])
def test_a_context_the_daemon_fetches_is_refused_for_tenants(version: str) -> None:
    target = f"/v1.41/build?remote=https://example.com/ctx.git{version}"
    with pytest.raises(BodyUnreadable, match="remote="):
        reader(target, TENANCY)
    assert reader(target) is None  # the policy alone decided it (build.remote-context)
