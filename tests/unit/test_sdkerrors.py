"""Docker SDK errors mapped at the boundary (dockmoat.sdkerrors), with the SDK's real
exceptions: built by the SDK itself from an HTTP response, as docker-py does."""

from __future__ import annotations

import json

import docker.errors
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.errors import ConfigError, DockmoatError, EngineError, NotFoundError
from dockmoat.sdkerrors import engine_errors, explain

URL = "http+docker://localhost/v1.47/containers/x/json"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/usr/lib/python3/site.py", line 1, in <module>\n'
    "ValueError: deep inside\n"
)


def response(status: int, body: bytes, content_type: str = "application/json") -> requests.Response:
    answer = requests.Response()
    answer.status_code = status
    answer._content = body
    answer.url = URL
    answer.reason = {404: "Not Found", 409: "Conflict", 500: "Internal Server Error"}[status]
    answer.headers["Content-Type"] = content_type
    answer.encoding = "utf-8"
    return answer


def engine_said(status: int, message: str) -> docker.errors.APIError:
    """The error docker-py raises when the engine answers `status` with {"message": ...}."""
    body = json.dumps({"message": message}).encode()
    with pytest.raises(docker.errors.APIError) as caught:
        docker.errors.create_api_error_from_http_exception(
            requests.HTTPError(response=response(status, body))
        )
    return caught.value


def raised_through(
    error: BaseException,
    what: str = "cannot do it",
    *,
    not_found: str | None = None,
    leave: tuple[type[docker.errors.DockerException], ...] = (),
) -> Exception:
    with pytest.raises(Exception) as caught, engine_errors(what, not_found=not_found, leave=leave):
        raise error
    return caught.value


# ---------------------------------------------------------------- explain


def test_the_engines_explanation_not_the_url() -> None:
    error = engine_said(500, "driver failed programming external connectivity")
    assert "Server Error for" in str(error)  # what str() would have said
    assert explain(error) == "driver failed programming external connectivity"


def test_a_body_that_is_not_json_is_the_explanation() -> None:
    with pytest.raises(docker.errors.APIError) as caught:
        docker.errors.create_api_error_from_http_exception(
            requests.HTTPError(response=response(500, b"  bad gateway\n", "text/plain"))
        )
    assert explain(caught.value) == "bad gateway"


def test_no_explanation_falls_back_to_the_errors_text() -> None:
    error = docker.errors.APIError("boom", response=response(500, b""))
    assert error.explanation is None
    assert explain(error) == f"500 Server Error for {URL}: Internal Server Error"


def test_first_line_only_without_the_panic_below() -> None:
    error = engine_said(500, "\n  runtime: out of memory  \ngoroutine 1 [running]:\nmain.main()")
    assert explain(error) == "runtime: out of memory"


def test_a_blank_error_is_named_by_its_class() -> None:
    assert explain(docker.errors.DockerException("")) == "DockerException"
    assert explain(docker.errors.APIError("", explanation=" \n\t")) == "APIError"


def test_sdk_errors_that_are_not_api_errors() -> None:
    connection = requests.ConnectionError(
        "('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))"
    )
    assert explain(connection) == str(connection)
    tls = docker.errors.TLSParameterError("Path to a certificate and key files must be provided")
    assert explain(tls).startswith("Path to a certificate and key files must be provided.")


@given(st.text())
def test_any_explanation_is_one_line_without_a_traceback(text: str) -> None:
    line = explain(engine_said(500, text + "\n" + TRACEBACK))
    assert line.splitlines() == [line]
    assert line == line.strip()
    assert line
    # At most the traceback's header (when all above it is blank), never its frames.
    frames = [frame.strip() for frame in TRACEBACK.splitlines()[1:]]
    assert not any(frame in line and frame not in text for frame in frames)


@given(st.text(), st.text())
def test_only_the_first_nonblank_line_is_kept(head: str, rest: str) -> None:
    error = engine_said(500, f"{head}\n{TRACEBACK}{rest}")
    first = next((line.strip() for line in head.splitlines() if line.strip()), None)
    assert explain(error) == (first or "Traceback (most recent call last):")


# ---------------------------------------------------------------- engine_errors


def test_an_api_error_is_an_engine_error_with_the_reason() -> None:
    mapped = raised_through(engine_said(500, "no space left on device"), "cannot create network n")
    assert type(mapped) is EngineError
    assert str(mapped) == "cannot create network n: no space left on device"


def test_mapped_from_none() -> None:
    mapped = raised_through(engine_said(500, "x"))
    assert mapped.__cause__ is None and mapped.__suppress_context__


@pytest.mark.parametrize(
    "error",
    [
        requests.ConnectionError("('Connection aborted.', RemoteDisconnected('closed'))"),
        requests.ReadTimeout("UnixHTTPConnectionPool(host='localhost'): Read timed out."),
        docker.errors.DockerException("Error while fetching server API version: refused"),
        docker.errors.TLSParameterError("bad certificate paths"),
    ],
)
def test_connection_and_client_errors_are_engine_errors(error: Exception) -> None:
    mapped = raised_through(error, "cannot reach the Docker engine")
    assert type(mapped) is EngineError
    assert str(mapped) == f"cannot reach the Docker engine: {explain(error)}"
    assert "\n" not in str(mapped)


def test_not_found_is_an_engine_error_unless_asked() -> None:
    missing = engine_said(404, "No such container: x")
    assert type(missing) is docker.errors.NotFound
    mapped = raised_through(missing, "cannot inspect x")
    assert type(mapped) is EngineError
    assert str(mapped) == "cannot inspect x: No such container: x"


def test_not_found_as_asked() -> None:
    missing = engine_said(404, "No such container: x")
    mapped = raised_through(missing, "cannot inspect x", not_found="no dind daemon named x")
    assert type(mapped) is NotFoundError
    assert str(mapped) == "no dind daemon named x"
    image = engine_said(404, "No such image: busybox:nope")
    assert type(image) is docker.errors.ImageNotFound
    assert type(raised_through(image, "x", not_found="no such image")) is NotFoundError


def test_not_found_is_not_a_not_found_error_for_other_statuses() -> None:
    mapped = raised_through(engine_said(500, "boom"), "cannot inspect x", not_found="gone")
    assert type(mapped) is EngineError


def test_left_errors_pass_through_unmapped() -> None:
    missing = engine_said(404, "No such network: n")
    assert raised_through(missing, "x", leave=(docker.errors.NotFound,)) is missing
    image = engine_said(404, "No such image: busybox:nope")
    assert raised_through(image, "x", leave=(docker.errors.NotFound,)) is image
    # Only what is left: the others are still mapped.
    assert type(raised_through(missing, "x", leave=(docker.errors.ImageNotFound,))) is EngineError
    conflict = engine_said(409, "network n has active endpoints")
    mapped = raised_through(conflict, "cannot remove network n", leave=(docker.errors.NotFound,))
    assert str(mapped) == "cannot remove network n: network n has active endpoints"


@pytest.mark.parametrize(
    "error",
    [EngineError("--preload x: layer broken"), ConfigError("bad"), ValueError("not the SDK")],
)
def test_other_errors_pass_through(error: Exception) -> None:
    assert raised_through(error) is error


def test_nothing_raised_nothing_mapped() -> None:
    with engine_errors("cannot do it"):
        done = True
    assert done


@given(st.text())
def test_any_engine_message_maps_to_one_line(text: str) -> None:
    mapped = raised_through(engine_said(500, text + "\n" + TRACEBACK), "cannot start it")
    assert isinstance(mapped, DockmoatError)
    assert str(mapped).splitlines() == [str(mapped)]
    assert str(mapped).startswith("cannot start it: ")
