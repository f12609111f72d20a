"""Job identity: a CI system's job token (GitLab ID token, GitHub Actions OIDC token)
verified against the issuer's key set, and the job name it entitles to
(docs/scale-out.md, "Job identity").

serve's job-open socket (dockmoat.tenancy.jobopen) calls it for each `POST /jobs`.

- `KeySet.from_jwks(text)`: the issuer's public keys (RSA and EC P-256), by `kid`.
- `verify(token, keys, issuer=..., audience=..., now=...)`: the claims of a token
  signed with RS256 or ES256 by a key of the set, for that issuer and audience, not
  expired, not before its time. Anything else is an `IdentityError` (`alg: none`,
  HMAC, an unknown `kid`, a bad signature, malformed input): never a traceback.
- `job_name(claims)`: `gl-<job_id>` (GitLab) or `gh-<run_id>-<run_attempt>-<job>`
  (GitHub), a valid dockmoat job name.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from dockmoat.errors import DockmoatError

#: Accepted signature algorithms: asymmetric only (a shared HMAC secret would let
#: anyone who can verify also mint tokens).
ALGORITHMS = ("RS256", "ES256")
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
DEFAULT_LEEWAY = 30.0
_MAX_TOKEN = 16 * 1024
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class IdentityError(DockmoatError):
    """The token does not prove the job's identity; the message says why."""

    exit_code = 3


def _b64(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as error:
        raise IdentityError(f"not base64url: {error}") from None


def _int(value: object, what: str) -> int:
    if not isinstance(value, str):
        raise IdentityError(f"JWK {what} missing")
    return int.from_bytes(_b64(value), "big")


def _key(jwk: Mapping[str, Any]) -> PublicKey:
    kty = jwk.get("kty")
    if kty == "RSA":
        return rsa.RSAPublicNumbers(_int(jwk.get("e"), "e"), _int(jwk.get("n"), "n")).public_key()
    if kty == "EC" and jwk.get("crv") == "P-256":
        numbers = ec.EllipticCurvePublicNumbers(
            _int(jwk.get("x"), "x"), _int(jwk.get("y"), "y"), ec.SECP256R1()
        )
        try:
            return numbers.public_key()
        except ValueError as error:
            raise IdentityError(f"JWK: {error}") from None
    raise IdentityError(f"JWK type {kty!r} ({jwk.get('crv', '')}) is not supported")


@dataclass(frozen=True)
class KeySet:
    keys: Mapping[str, PublicKey] = field(default_factory=dict)

    @classmethod
    def from_jwks(cls, text: str | bytes) -> KeySet:
        try:
            data = json.loads(text)
        except ValueError as error:
            raise IdentityError(f"JWKS is not JSON: {error}") from None
        entries = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not entries:
            raise IdentityError("JWKS has no keys")
        keys: dict[str, PublicKey] = {}
        for index, jwk in enumerate(entries):
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            keys[str(jwk.get("kid", f"#{index}"))] = _key(jwk)
        if not keys:
            raise IdentityError("JWKS has no signing keys")
        return cls(keys)


def _json_part(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64(part))
    except ValueError:
        raise IdentityError(f"token {what} is not JSON") from None
    if not isinstance(value, dict):
        raise IdentityError(f"token {what} is not an object")
    return value


def _check_signature(key: PublicKey, alg: str, signed: bytes, signature: bytes) -> None:
    try:
        if alg == "RS256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            return
        if alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
            if len(signature) != 64:
                raise IdentityError("ES256 signature is not 64 bytes")
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
            return
    except InvalidSignature:
        raise IdentityError("bad signature") from None
    raise IdentityError(f"the key {type(key).__name__} cannot verify {alg}")


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IdentityError(f"claim {name} is not a number")
    return float(value)


def verify(
    token: str,
    keys: KeySet,
    *,
    issuer: str,
    audience: str,
    now: float,
    leeway: float = DEFAULT_LEEWAY,
) -> dict[str, Any]:
    """The claims of `token`, or IdentityError saying why it proves nothing."""
    if len(token) > _MAX_TOKEN:
        raise IdentityError("token too long")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise IdentityError("not a signed JWT (header.payload.signature)")
    header, claims = _json_part(parts[0], "header"), _json_part(parts[1], "payload")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise IdentityError(f"algorithm {alg!r} is not accepted (only {', '.join(ALGORITHMS)})")
    kid = header.get("kid")
    if kid is not None:
        key = keys.keys.get(str(kid))
        if key is None:
            raise IdentityError(f"unknown key id {kid!r}")
    elif len(keys.keys) == 1:
        key = next(iter(keys.keys.values()))
    else:
        raise IdentityError("token names no key id and the key set has several")
    _check_signature(key, str(alg), f"{parts[0]}.{parts[1]}".encode(), _b64(parts[2]))
    if claims.get("iss") != issuer:
        raise IdentityError(f"issuer {claims.get('iss')!r} is not {issuer!r}")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if audience not in audiences:
        raise IdentityError(f"audience {aud!r} does not include {audience!r}")
    exp, nbf = _number(claims, "exp"), _number(claims, "nbf")
    if exp is None:
        raise IdentityError("token has no expiry")
    if now > exp + leeway:
        raise IdentityError("token expired")
    if nbf is not None and now + leeway < nbf:
        raise IdentityError("token not valid yet")
    return claims


_SLUG = re.compile(r"[^a-z0-9]+")


def _slug(value: object) -> str:
    return _SLUG.sub("-", str(value).lower()).strip("-")


def job_name(claims: Mapping[str, Any], *, max_length: int = 48) -> str:
    """The dockmoat job a verified token entitles to."""
    from dockmoat.errors import ConfigError
    from dockmoat.tenancy.names import validate_job_name

    if claims.get("iss") == GITHUB_ISSUER:
        parts = [claims.get("run_id"), claims.get("run_attempt")]
        if not all(isinstance(p, str | int) and str(p).isdigit() for p in parts):
            raise IdentityError("GitHub token without run_id/run_attempt")
        name = f"gh-{parts[0]}-{parts[1]}"
        job = _slug(claims.get("job_workflow_ref", "") or claims.get("workflow", ""))
        name = f"{name}-{job}"[:max_length].rstrip("-") if job else name
    else:
        job_id = claims.get("job_id")
        if not (isinstance(job_id, str | int) and str(job_id).isdigit()):
            raise IdentityError("GitLab token without a numeric job_id")
        name = f"gl-{job_id}"
    try:
        return validate_job_name(name)
    except ConfigError as error:
        raise IdentityError(str(error)) from None
