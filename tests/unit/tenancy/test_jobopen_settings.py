"""`serve --job-open-socket/--job-identity/--job-identity-audience`: parsed once, at
start-up, one line for anything missing or unreadable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockmoat.errors import ConfigError
from dockmoat.tenancy.jobopen import JobOpenSettings

JWKS = {"keys": [{"kty": "EC", "kid": "k", "crv": "P-256",
                  "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                  "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}  # fmt: skip


def test_settings_read_the_key_sets(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(JWKS))
    parsed = JobOpenSettings.parse(tmp_path / "o.sock", (f"https://gl.example={jwks}",), "aud")
    assert parsed is not None
    assert set(parsed.issuers) == {"https://gl.example"} and parsed.audience == "aud"
    assert JobOpenSettings.parse(None, (), None) is None


@pytest.mark.parametrize(
    ("socket", "identities", "audience", "says"),
    [
        (None, ("i=f",), None, "need --job-open-socket"),
        ("o.sock", (), "aud", "at least one --job-identity"),
        ("o.sock", ("i=jwks.json",), None, "--job-identity-audience"),
        ("o.sock", ("no-equals",), "aud", "ISSUER=JWKS_FILE"),
        ("o.sock", ("i=missing.json",), "aud", "cannot read"),
        ("o.sock", ("i=bad.json",), "aud", "is not a JWKS"),
    ],
)
def test_bad_settings_are_one_line_config_errors(
    tmp_path: Path, socket: str | None, identities: tuple[str, ...], audience: str | None,
    says: str,
) -> None:  # fmt: skip
    (tmp_path / "jwks.json").write_text(json.dumps(JWKS))
    (tmp_path / "bad.json").write_text("{not json")
    ids = tuple(i.replace("=", f"={tmp_path}/", 1) if "=" in i else i for i in identities)
    with pytest.raises(ConfigError, match=says) as raised:
        JobOpenSettings.parse(tmp_path / socket if socket else None, ids, audience)
    assert "\n" not in str(raised.value)
