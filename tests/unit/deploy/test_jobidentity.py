"""Job identity tokens verified offline with keys this test makes (cryptography):
only a well-signed, current token for the configured issuer and audience names a job,
and every other token is one IdentityError, never a traceback."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.deploy.jobidentity import GITHUB_ISSUER, IdentityError, KeySet, job_name, verify

GITLAB = "https://gitlab.example.com"
AUD = "dockmoat://runners"
NOW = 1_800_000_000.0
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _jwks() -> str:
    r = RSA_KEY.public_key().public_numbers()
    e = EC_KEY.public_key().public_numbers()
    return json.dumps({"keys": [
        {"kty": "RSA", "kid": "rsa1", "use": "sig", "alg": "RS256", "n": _int(r.n), "e": _int(r.e)},
        {"kty": "EC", "kid": "ec1", "crv": "P-256", "x": _int(e.x), "y": _int(e.y)},
    ]})  # fmt: skip


KEYS = KeySet.from_jwks(_jwks())


def _token(claims: dict[str, Any], *, alg: str = "ES256", kid: str | None = "ec1",
           key: Any = None) -> str:  # fmt: skip
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signed = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if alg == "RS256":
        signature = (key or RSA_KEY).sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
    elif alg == "ES256":
        der = (key or EC_KEY).sign(signed.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = b""
    return f"{signed}.{_b64(signature)}"


def _gitlab(**extra: Any) -> dict[str, Any]:
    return {"iss": GITLAB, "aud": AUD, "exp": NOW + 300, "iat": NOW - 5, "nbf": NOW - 5,
            "job_id": "4242", "project_path": "group/app", **extra}  # fmt: skip


def _check(token: str) -> dict[str, Any]:
    return verify(token, KEYS, issuer=GITLAB, audience=AUD, now=NOW)


def test_good_tokens_name_their_job() -> None:
    assert job_name(_check(_token(_gitlab()))) == "gl-4242"
    assert job_name(_check(_token(_gitlab(), alg="RS256", kid="rsa1"))) == "gl-4242"
    github = {"iss": GITHUB_ISSUER, "aud": [AUD, "other"], "exp": NOW + 60, "run_id": "991",
              "run_attempt": "2", "workflow": "Build & Test"}  # fmt: skip
    claims = verify(_token(github), KEYS, issuer=GITHUB_ISSUER, audience=AUD, now=NOW)
    assert job_name(claims) == "gh-991-2-build-test"


@pytest.mark.parametrize(
    ("token", "says"),
    [
        (_token(_gitlab(exp=NOW - 100)), "expired"),
        (_token(_gitlab(nbf=NOW + 100)), "not valid yet"),
        (_token(_gitlab(aud="someone-else")), "audience"),
        (_token(_gitlab(iss="https://evil.example.com")), "issuer"),
        (_token({k: v for k, v in _gitlab().items() if k != "exp"}), "no expiry"),
        (_token(_gitlab(), kid="nope"), "unknown key id"),
        (_token(_gitlab(), key=OTHER_KEY), "bad signature"),
        (_token(_gitlab(), alg="none"), "not accepted"),
        (_token(_gitlab(), alg="HS256"), "not accepted"),
        (_token(_gitlab(), kid=None), "several"),
        (_token(_gitlab(), alg="RS256", kid="ec1"), "cannot verify"),
        ("a.b", "not a signed JWT"),
        ("!!!.e30.xx", "header"),
        (_token(_gitlab(exp="tomorrow")), "not a number"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(token: str, says: str) -> None:
    with pytest.raises(IdentityError, match=says):
        _check(token)


def test_a_tampered_payload_fails_the_signature() -> None:
    header, _payload, signature = _token(_gitlab()).split(".")
    forged = _b64(json.dumps(_gitlab(job_id="1")).encode())
    with pytest.raises(IdentityError, match="bad signature"):
        _check(f"{header}.{forged}.{signature}")


def test_one_job_token_cannot_name_another_job() -> None:
    mine = job_name(_check(_token(_gitlab(job_id="1"))))
    theirs = job_name(_check(_token(_gitlab(job_id="2"))))
    assert mine != theirs
    with pytest.raises(IdentityError, match="job_id"):
        job_name(_check(_token(_gitlab(job_id="../2"))))


def test_bad_key_sets_are_refused() -> None:
    for text in ("", "[]", '{"keys": []}', '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}',
                 '{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}'):  # fmt: skip
        with pytest.raises(IdentityError):
            KeySet.from_jwks(text)
    pem = EC_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(IdentityError):
        KeySet.from_jwks(pem)


@given(st.text(max_size=300))
def test_arbitrary_input_is_an_identity_error_or_nothing(text: str) -> None:
    with contextlib.suppress(IdentityError):
        _check(text)
