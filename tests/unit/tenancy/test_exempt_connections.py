"""A connection the tenancy stage does not apply to is one `tenant_of` answers None for,
for good."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from dockmoat.api.request import ClientIdentity
from dockmoat.tenancy.service import TenancyService, TenancySettings
from support.serve_settings import settings


def _service(tmp_path: Path) -> TenancyService:
    files = {}
    for name in ("cert", "key", "ca"):
        (tmp_path / name).write_text("x")
        files[f"tls_{name}"] = tmp_path / name
    served = settings(listen=("tcp://127.0.0.1:2376", "unix:///tmp/c.sock"),
                      tenant_from_cn=True, **files)  # fmt: skip
    return TenancyService(served, TenancySettings(state_db=tmp_path / "state.db"))


LISTENERS = st.sampled_from(["tcp://127.0.0.1:2376", "unix:///tmp/c.sock", "unix:///other"])
TENANTS = st.none() | st.sampled_from(["job-a", "c-sock-tenant", "Bad Name"])


def test_exempt_means_no_tenant(tmp_path: Path) -> None:
    service = _service(tmp_path)

    @given(LISTENERS, TENANTS)
    def check(listener: str, tenant: str | None) -> None:
        client = ClientIdentity(listener=listener, tenant=tenant)
        if not service.stage.applies_to(client):
            assert service.tenant_of(client) is None
        else:  # a tenant, a closed job's or a bad certificate's Deny
            assert tenant is not None or listener == "tcp://127.0.0.1:2376"

    check()


def test_cn_listeners_and_tenant_clients_are_never_exempt(tmp_path: Path) -> None:
    service = _service(tmp_path)
    assert not service.stage.applies_to(ClientIdentity(listener="unix:///other"))
    assert service.stage.applies_to(ClientIdentity(listener="tcp://127.0.0.1:2376"))
    assert service.stage.applies_to(ClientIdentity(listener="unix:///other", tenant="job-a"))
