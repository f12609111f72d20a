"""Who the clients of a listener are: derived names, --tenant, --tenant-from-cn, --no-tenancy."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.errors import ConfigError
from dockmoat.gateway.config import default_tenant, parse_listen
from dockmoat.tenancy.names import certificate_cn, listener_tenant_name, validate_job_name
from support.serve_settings import settings


def test_the_default_listener_is_a_tenant_with_a_stable_name() -> None:
    first = settings().listeners[0]
    again = settings().listeners[0]
    assert first.tenant is not None and first.tenant == again.tenant
    assert first.tenant.startswith("docker-")
    assert validate_job_name(first.tenant) == first.tenant
    assert not first.tenant_from_cn


def test_each_listener_is_its_own_tenant() -> None:
    built = settings(listen=("unix:///tmp/a/docker.sock", "unix:///tmp/b/docker.sock",
                             "tcp://127.0.0.1:2375"))  # fmt: skip
    names = [item.tenant for item in built.listeners]
    assert None not in names and len(set(names)) == 3
    assert names[2] is not None and names[2].startswith("127.0.0.1-2375-")


@pytest.mark.parametrize("profile", ["baseline", "restricted"])
def test_tenant_names_all_listeners(profile: str) -> None:
    built = settings(listen=("unix:///tmp/a.sock", "unix:///tmp/b.sock"), tenant="shared",
                     profile=profile)  # fmt: skip
    assert [item.tenant for item in built.listeners] == ["shared", "shared"]


def test_permissive_and_no_tenancy_keep_no_tenant() -> None:
    assert settings(profile="permissive").listeners[0].tenant is None
    assert settings(no_tenancy=True).listeners[0].tenant is None
    assert settings(profile="permissive", tenant="x").listeners[0].tenant == "x"


def test_bad_combinations_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--no-tenancy"):
        settings(no_tenancy=True, tenant="x")
    with pytest.raises(ConfigError, match="exclude each other"):
        settings(tenant="x", tenant_from_cn=True)
    with pytest.raises(ConfigError, match="mutual-TLS"):
        settings(tenant_from_cn=True, listen=("tcp://127.0.0.1:2375",))
    with pytest.raises(ConfigError, match="invalid job name"):
        settings(tenant="Bad--Name")


def test_tenant_from_cn_applies_to_tls_listeners_only(tmp_path: Path) -> None:
    files = {}
    for name in ("cert", "key", "ca"):
        (tmp_path / name).write_text("x")
        files[f"tls_{name}"] = tmp_path / name
    built = settings(
        listen=("tcp://127.0.0.1:2376", "unix:///tmp/c.sock"), tenant_from_cn=True, **files
    )
    tls, unix = built.listeners
    assert tls.tenant_from_cn and tls.tenant is None
    assert not unix.tenant_from_cn and unix.tenant is not None


def test_derived_name_depends_on_the_address() -> None:
    one = parse_listen("unix:///run/x/docker.sock", tls_cert=None, tls_key=None, tls_ca=None)
    two = parse_listen("unix:///run/y/docker.sock", tls_cert=None, tls_key=None, tls_ca=None)
    assert default_tenant(one.endpoint) != default_tenant(two.endpoint)


@given(st.text(max_size=80), st.text(max_size=80))
def test_derived_names_are_always_valid_tenant_names(address: str, readable: str) -> None:
    name = listener_tenant_name(address, readable)
    assert validate_job_name(name) == name
    assert "--" not in name


def test_certificate_cn() -> None:
    assert certificate_cn({"subject": ((("commonName", "alice"),),)}) == "alice"
    assert certificate_cn({"subject": ((("organizationName", "x"),),)}) is None
    two = {"subject": ((("commonName", "a"),), (("commonName", "b"),))}
    assert certificate_cn(two) is None
    assert certificate_cn(None) is None
    assert certificate_cn({}) is None
