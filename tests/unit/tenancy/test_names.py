import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.errors import ConfigError
from dockmoat.tenancy.names import Namespace, validate_job_name

job_names = st.from_regex(r"[a-z0-9](?:[a-z0-9_.]|-[a-z0-9_.]){0,20}", fullmatch=True)
resource_names = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,30}", fullmatch=True)


@pytest.mark.parametrize("bad", ["", "A", "a--b", "-a", "a-", "a/b", "a b", "x" * 49])
def test_invalid_job_names_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        validate_job_name(bad)


@pytest.mark.parametrize("good", ["ci-42", "a", "job_1.2", "a-b-c"])
def test_valid_job_names(good: str) -> None:
    assert validate_job_name(good) == good


def test_prefix_and_read_back() -> None:
    ns = Namespace.for_job("ci-1")
    assert ns.engine_name("db") == "ci-1--db"
    assert ns.engine_name("/db") == "/ci-1--db"
    assert ns.client_name("/ci-1--db") == "/db"
    assert ns.client_name("/other--db") == "/other--db"
    assert ns.client_path_name("/ci-1--web/ci-1--db") == "/web/db"
    assert ns.owns_name("/ci-1--db") and not ns.owns_name("/ci-10--db")


@given(job_names, resource_names)
def test_round_trip(job: str, name: str) -> None:
    ns = Namespace.for_job(job)
    assert ns.client_name(ns.engine_name(name)) == name
    assert ns.owns_name(ns.engine_name(name))


@given(job_names, job_names, resource_names, resource_names)
def test_two_jobs_never_share_an_engine_name(a: str, b: str, x: str, y: str) -> None:
    if a == b:
        return
    na, nb = Namespace.for_job(a), Namespace.for_job(b)
    assert na.engine_name(x) != nb.engine_name(y)
    assert not nb.owns_name(na.engine_name(x))


def test_name_filters_move_into_the_name_space() -> None:
    ns = Namespace.for_job("j")
    assert ns.name_filter("^/db$") == "^/j\\-\\-db$"
    assert ns.name_filter("^db") == "^/?j\\-\\-db"
    assert ns.name_filter("db") == "db"
