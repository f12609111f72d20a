import hashlib
import json
from pathlib import Path

import pytest

from dockmoat.ci.doctor import contexts
from dockmoat.ci.doctor.config import resolve
from dockmoat.errors import ConfigError


def _store(root: Path, name: str, host: str, tls: bool) -> Path:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = root / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    endpoint = {"Host": host, "SkipTLSVerify": False}
    (meta / "meta.json").write_text(json.dumps({"Name": name, "Endpoints": {"docker": endpoint}}))
    if tls:
        (root / "contexts" / "tls" / digest / "docker").mkdir(parents=True)
    return root


def test_selection_order(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "ci"}))
    assert contexts.selected_name(None, {}, tmp_path) == "ci"
    assert contexts.selected_name(None, {"DOCKER_CONTEXT": "env"}, tmp_path) == "env"
    assert contexts.selected_name("flag", {"DOCKER_CONTEXT": "env"}, tmp_path) == "flag"
    assert contexts.selected_name("default", {}, tmp_path) is None
    assert contexts.selected_name(None, {}, tmp_path / "none") is None


def test_a_tls_context_turns_verification_on(tmp_path: Path) -> None:
    store = _store(tmp_path, "dind", "tcp://127.0.0.1:32768", tls=True)
    endpoint = contexts.load("dind", store)
    config = resolve(host=None, env={}, home=tmp_path, context=endpoint)
    assert config.target.url == "tcp://127.0.0.1:32768"
    assert config.target.source == "context dind"
    assert config.tls is not None and config.tls.verify
    assert config.tls.ca == endpoint.tls_dir / "ca.pem"  # type: ignore[operator]


def test_a_plain_context_and_the_host_flag(tmp_path: Path) -> None:
    endpoint = contexts.load("local", _store(tmp_path, "local", "unix:///run/x.sock", tls=False))
    assert resolve(host=None, env={}, home=tmp_path, context=endpoint).target.path == "/run/x.sock"
    flagged = resolve(host="unix:///y.sock", env={}, home=tmp_path, context=endpoint)
    assert flagged.target.source == "--host"


def test_missing_or_broken_contexts_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        contexts.load("nope", tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        contexts.selected_name(None, {}, tmp_path)
