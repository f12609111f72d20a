"""`dockmoat generate kubernetes|arc|gitlab-k8s|systemd`: every Kubernetes document
validated offline against the Kubernetes schemas (kubernetes-validate, strict), the
security context each container needs checked, the GitLab config.toml read back, and
the systemd units checked by `systemd-analyze verify`."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from dockmoat.ci.generate.deploy import DeployOptions, Target, render, split_units
from dockmoat.cli import main

K8S_VERSIONS = ("1.29", "1.33", kubernetes_validate.latest_version())


def _docs(target: Target, **knobs: Any) -> list[dict[str, Any]]:
    text = render(DeployOptions(target=target, **knobs))
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def _arc_pod(**knobs: Any) -> dict[str, Any]:
    values = _docs(Target.ARC, **knobs)[0]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "arc-runner"},
            "spec": values["template"]["spec"]}  # fmt: skip


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def _pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] in ("DaemonSet", "Deployment"):
        return [doc["spec"]["template"]["spec"]]
    if doc["kind"] == "PodTemplate":
        return [doc["template"]["spec"]]
    if doc["kind"] == "Pod":
        return [doc["spec"]]
    return []


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "knobs", [{}, {"namespace": "ci-guard", "docker_gid": 988, "profile": "restricted"}]
)
def test_every_kubernetes_document_validates(version: str, knobs: dict[str, Any]) -> None:
    docs = [*_docs(Target.KUBERNETES, **knobs), _arc_pod()]
    assert {d["kind"] for d in docs} == {"Namespace", "ServiceAccount", "DaemonSet",
                                         "PodTemplate", "Pod"}  # fmt: skip
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_validation_catches_a_broken_manifest() -> None:
    """The check can fail: a field the schema does not know is refused in strict mode."""
    daemonset = next(d for d in _docs(Target.KUBERNETES) if d["kind"] == "DaemonSet")
    daemonset["spec"]["template"]["spec"]["containers"][0]["privileged"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, "1.33", strict=True)


def test_the_guard_runs_restricted_and_only_the_dind_sidecar_is_privileged() -> None:
    docs = [*_docs(Target.KUBERNETES), _arc_pod()]
    privileged = []
    for doc in docs:
        for spec in _pod_specs(doc):
            for container in _containers(spec):
                context = container.get("securityContext", {})
                assert "limits" in container.get("resources", {}), container["name"]
                if context.get("privileged"):
                    privileged.append(container["name"])
                    continue
                assert context.get("allowPrivilegeEscalation") is False, container["name"]
                assert "ALL" in context.get("capabilities", {}).get("drop", []), container["name"]
    assert privileged == ["dind"]
    guard = next(d for d in docs if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    context = guard["containers"][0]["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
    assert context["readOnlyRootFilesystem"] is True
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    # The init container is root only with CHOWN, to hand over three host folders.
    prepare = guard["initContainers"][0]["securityContext"]
    assert prepare["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}


def test_only_the_guard_mounts_the_node_docker_socket() -> None:
    for doc in _docs(Target.KUBERNETES):
        for spec in _pod_specs(doc):
            paths = {v["hostPath"]["path"] for v in spec.get("volumes", []) if "hostPath" in v}
            if doc["kind"] == "DaemonSet":
                assert "/var/run/docker.sock" in paths
            else:
                assert paths == {"/run/dockmoat/guarded"}
                assert not any(p.startswith("/run/dockmoat/control") for p in paths)
    runner = next(d for d in _docs(Target.KUBERNETES) if d["kind"] == "PodTemplate")
    env = runner["template"]["spec"]["containers"][0]["env"]
    assert {"name": "DOCKER_HOST", "value": "unix:///run/dockmoat/guarded/docker.sock"} in env


def test_arc_sidecar_is_ready_on_ping_over_mutual_tls() -> None:
    spec = _arc_pod(memory="8g", cpus=3)["spec"]
    dind = spec["initContainers"][0]
    assert dind["restartPolicy"] == "Always"  # a native sidecar: up before the runner
    probe = dind["startupProbe"]["exec"]["command"]
    assert probe[-3:] == ["tcp://127.0.0.1:2376", "--tls-dir", "/certs/client"]
    assert dind["resources"]["limits"] == {"cpu": "3", "memory": "8Gi"}
    runner = spec["containers"][0]
    env = {e["name"]: e["value"] for e in runner["env"]}
    assert env == {"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1",
                   "DOCKER_CERT_PATH": "/certs/client"}  # fmt: skip
    assert {"name": "dind-certs", "mountPath": "/certs/client", "readOnly": True} in runner[
        "volumeMounts"
    ]


def test_gitlab_k8s_config_privileges_only_the_dind_service() -> None:
    text = render(DeployOptions(target=Target.GITLAB_K8S, ci_url="https://gitlab.example.org"))
    runner = tomllib.loads(text)["runners"][0]
    k8s = runner["kubernetes"]
    assert runner["executor"] == "kubernetes" and runner["url"] == "https://gitlab.example.org"
    assert k8s["privileged"] is False
    assert k8s["service_container_security_context"] == {"privileged": True}
    assert k8s["build_container_security_context"]["allow_privilege_escalation"] is False
    assert k8s["allowed_services"] == ["dockmoat/dind:0.1.0", "dockmoat/dind:*"]
    assert k8s["services"] == [{"name": "dockmoat/dind:0.1.0", "alias": "docker"}]
    assert k8s["volumes"]["empty_dir"][0]["mount_path"] == "/certs/client"
    assert "DOCKER_HOST=tcp://docker:2376" in runner["environment"]


@pytest.mark.parametrize("unprivileged", [False, True])
def test_systemd_units_verify(tmp_path: Path, unprivileged: bool) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    exe = Path(shutil.which("dockmoat") or Path(__file__).parents[3] / ".venv/bin/dockmoat")
    text = render(
        DeployOptions(
            target=Target.SYSTEMD, prefix=str(exe.parent.parent), unprivileged=unprivileged
        )
    )
    units = split_units(text)
    assert set(units) == {"dockmoat.service", "dockmoat-dind-pool.service"}
    for name, unit in units.items():
        (tmp_path / name).write_text(unit)
    done = subprocess.run(
        [analyze, "verify", *(str(tmp_path / n) for n in units)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stderr
    serve = units["dockmoat.service"]
    assert "NoNewPrivileges=yes" in serve and "ExecReload=/bin/kill -HUP $MAINPID" in serve
    if unprivileged:
        assert "User=dockmoat" in serve and "ProtectSystem=strict" in serve
        assert "--bind-pins off" in serve
    else:
        # Pins mount in dockerd's mount namespace: nothing may give serve its own.
        assert "ProtectSystem=" not in serve and "PrivateTmp=" not in serve
    # The check can fail: a broken unit is reported.
    (tmp_path / "dockmoat.service").write_text(serve.replace("Type=exec", "Type=bogus"))
    broken = subprocess.run(
        [analyze, "verify", str(tmp_path / "dockmoat.service")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "Type" in broken.stderr or "type" in broken.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["kubernetes", "--namespace", "Not_A_Name"], "--namespace"),
        (["kubernetes", "--dockmoat-image", "bad image"], "--dockmoat-image"),
        (["arc", "--ci-url", "http://github.com/x"], "--ci-url"),
        (["systemd", "--prefix", "relative/dir"], "--prefix"),
        (["gitlab-k8s", "--memory", "lots"], "--memory"),
    ],
)
def test_bad_knobs_are_one_line_not_a_traceback(args: list[str], says: str) -> None:
    result = CliRunner().invoke(main, ["generate", *args])
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output


def test_cli_prints_each_target(tmp_path: Path) -> None:
    for target in Target:
        result = CliRunner().invoke(main, ["generate", target.value])
        assert result.exit_code == 0, result.output
        assert "Generated by `dockmoat generate" in result.output
    out = tmp_path / "k8s" / "guard.yaml"
    result = CliRunner().invoke(main, ["generate", "kubernetes", "-o", str(out)])
    assert result.exit_code == 0 and out.read_text().startswith("# Generated by")


JWKS = (
    '{"keys": [{"kty": "EC", "kid": "k", "crv": "P-256",'
    ' "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",'
    ' "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}'
)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_job_identity_wires_the_job_open_socket(version: str) -> None:
    docs = _docs(
        Target.KUBERNETES,
        job_identities=(("https://gitlab.example.com", JWKS),),
        job_identity_audience="dockmoat://pool-a",
    )
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
    by_kind = {doc["kind"]: doc for doc in docs}
    assert by_kind["ConfigMap"]["data"] == {"0.json": JWKS}
    guard = by_kind["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
    args = guard["args"]
    assert args[args.index("--job-open-socket") + 1] == "/run/dockmoat/open/open.sock"
    assert "https://gitlab.example.com=/etc/dockmoat/jwks/0.json" in args
    assert args[args.index("--job-identity-audience") + 1] == "dockmoat://pool-a"
    runner = by_kind["PodTemplate"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"]: m for m in runner["volumeMounts"]}
    assert mounts["/run/dockmoat/open"]["readOnly"] is True
    assert "/run/dockmoat" not in mounts  # never the guard's control socket


def test_job_identity_on_the_command_line(tmp_path: Path) -> None:
    jwks = tmp_path / "gitlab.jwks"
    jwks.write_text(JWKS)
    given = ["generate", "kubernetes", "--job-identity", f"https://gl.example={jwks}",
             "--job-identity-audience", "dockmoat://a"]  # fmt: skip
    result = CliRunner().invoke(main, given)
    assert result.exit_code == 0, result.output
    assert "--job-open-socket" in result.output and "kind: ConfigMap" in result.output
    (tmp_path / "bad.jwks").write_text("{nope")
    for args, says in (
        (
            [
                "--job-identity",
                f"https://gl.example={tmp_path / 'bad.jwks'}",
                "--job-identity-audience",
                "a",
            ],
            "is not a JWKS",
        ),
        (["--job-identity", f"https://gl.example={jwks}"], "go together"),
        (["--job-identity", "no-file-given"], "ISSUER=JWKS_FILE"),
    ):
        result = CliRunner().invoke(main, ["generate", "kubernetes", *args])
        assert result.exit_code == 2 and says in result.output, result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize("job_identity", [False, True])
def test_audit_reads_the_generated_manifests_back_without_a_finding(
    tmp_path: Path, job_identity: bool
) -> None:
    jwks = tmp_path / "gitlab.jwks"
    jwks.write_text(JWKS)
    out = tmp_path / "guard.yaml"
    extra = ["--job-identity", f"https://gl.example={jwks}",
             "--job-identity-audience", "dockmoat://a"] if job_identity else []  # fmt: skip
    assert (
        CliRunner().invoke(main, ["generate", "kubernetes", *extra, "-o", str(out)]).exit_code == 0
    )
    result = CliRunner().invoke(main, ["audit", str(out)])
    assert "0 finding(s)" in result.output, result.output
    # The control plane itself stays a finding: a pod mounting all of /run/dockmoat.
    text = out.read_text().replace("path: /run/dockmoat/guarded", "path: /run/dockmoat", 1)
    out.write_text(text)
    result = CliRunner().invoke(main, ["audit", str(out)])
    assert "dockmoat's control plane" in result.output, result.output
