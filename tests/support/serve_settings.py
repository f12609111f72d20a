"""`dockmoat serve`'s settings as the CLI would build them, with only what a test changes."""

from __future__ import annotations

from dockmoat.gateway.config import ServeSettings, build_settings


def settings(**overrides: object) -> ServeSettings:
    args: dict[str, object] = {
        "listen": (), "upstream": None, "profile": "baseline", "policy_file": None,
        "allow_bind": (), "audit_log": None, "tls_cert": None, "tls_key": None, "tls_ca": None,
        "socket_group": None, "log_level": "info", "env": {},
    }  # fmt: skip
    args.update(overrides)
    return build_settings(**args)  # type: ignore[arg-type]
