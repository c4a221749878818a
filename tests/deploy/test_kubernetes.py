"""deploy/kubernetes: every overlay renders with kustomize, validates against the Kubernetes
schemas (kubernetes-validate, strict), and keeps the promises the runbook relies on: probes,
graceful termination, non-root read-only pods, spread, autoscaling that cannot outgrow the
local-mode share, and a taogate.toml that taogate itself accepts with the Secret's variables.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from taogate import Settings, load_settings
from tests.deploy.conftest import DEPLOY, find_tool, kustomize_command, run_tool

KUBE = DEPLOY / "kubernetes"
OVERLAYS = ["dev", "production"]
#: the oldest Kubernetes the files are meant for, and the newest schemas kubernetes-validate has
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
LABELS = {"app.kubernetes.io/name": "taogate", "app.kubernetes.io/component": "gateway"}
VALIDATE_HINT = "pip install kubernetes-validate (the dev extras have it)"

Doc = dict[str, Any]


def render(path: Path) -> list[Doc]:
    out = run_tool([*kustomize_command(), str(path)])
    return [doc for doc in yaml.safe_load_all(out) if doc]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    """The one ``kind`` called ``name``, or generated from it (``name-<hash>``)."""
    found = [
        d
        for d in docs
        if d["kind"] == kind
        and (d["metadata"]["name"] == name or d["metadata"]["name"].startswith(f"{name}-"))
    ]
    found = [d for d in found if d["metadata"]["name"] == name] or found
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def container(deployment: Doc) -> Doc:
    (first, *_) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(first)


def secret_values(docs: list[Doc]) -> dict[str, str]:
    """The Secret the overlay generates, or else the committed example."""
    generated = [d for d in docs if d["kind"] == "Secret"]
    if generated:
        (secret,) = generated
        return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    example = yaml.safe_load((KUBE / "secret.example.yaml").read_text(encoding="utf-8"))
    return dict(example["stringData"])


def settings_of(docs: list[Doc], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """taogate.toml from the rendered ConfigMap, loaded by taogate with the Secret's variables
    and the Deployment's own environment."""
    config = named(docs, "ConfigMap", "taogate-config")["data"]["taogate.toml"]
    path = tmp_path / "taogate.toml"
    path.write_text(config, encoding="utf-8")
    for key, value in secret_values(docs).items():
        monkeypatch.setenv(key, value)
    for env in container(named(docs, "Deployment", "taogate")).get("env", []):
        if "value" in env:
            monkeypatch.setenv(env["name"], env["value"])
    return load_settings(path)


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> list[Doc]:
    return render(KUBE / "overlays" / str(request.param))


# --- the tools ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
def test_renders_and_validates_against_the_schemas(
    target: str, version: str, tmp_path: Path
) -> None:
    validate = find_tool("kubernetes-validate", VALIDATE_HINT)
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(run_tool([*kustomize_command(), str(KUBE / target)]), encoding="utf-8")
    run_tool([validate, "--strict", "--quiet", "-k", version, str(rendered)])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_secret_example_validates(version: str) -> None:
    validate = find_tool("kubernetes-validate", VALIDATE_HINT)
    run_tool([validate, "--strict", "--quiet", "-k", version, str(KUBE / "secret.example.yaml")])


def test_validation_can_fail(tmp_path: Path) -> None:
    """The check is real: a misspelt field fails strict validation."""
    validate = find_tool("kubernetes-validate", VALIDATE_HINT)
    pdb = named(render(KUBE / "overlays" / "production"), "PodDisruptionBudget", "taogate")
    pdb["spec"]["maxUnavailabel"] = pdb["spec"].pop("maxUnavailable")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(pdb), encoding="utf-8")
    result = subprocess.run(
        [validate, "--strict", "--quiet", "-k", KUBERNETES_VERSIONS[0], str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "maxUnavailabel" in result.stdout + result.stderr


# --- what the rendered objects promise ---------------------------------------------------------


def test_deployment_probes_resources_and_security(overlay: list[Doc]) -> None:
    deployment = named(overlay, "Deployment", "taogate")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["selector"]["matchLabels"] == LABELS
    pod = spec["template"]["spec"]
    assert LABELS.items() <= spec["template"]["metadata"]["labels"].items()
    c = container(deployment)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= c["resources"]["requests"].keys()
    assert "memory" in c["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = c["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # a read-only root needs a writable /tmp
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/tmp" in mounts
    assert ports == {"http": 8080}
    keys = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in pod["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"] == LABELS


def test_graceful_termination_fits_the_grace_period(
    overlay: list[Doc], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """preStop sleep (endpoints drop the pod) + graceful_shutdown_s (requests in progress
    finish) + a margin for closing the gateway stay inside terminationGracePeriodSeconds."""
    deployment = named(overlay, "Deployment", "taogate")
    command = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pre_stop >= 3, "time for the endpoints to drop the pod before SIGTERM"
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    settings = settings_of(overlay, tmp_path, monkeypatch)
    assert settings.server.graceful_shutdown_s > 0
    assert pre_stop + settings.server.graceful_shutdown_s + 5 <= grace


def test_config_is_accepted_by_taogate_and_matches_the_pod(
    overlay: list[Doc], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of(overlay, tmp_path, monkeypatch)
    c = container(named(overlay, "Deployment", "taogate"))
    assert settings.server.host == "0.0.0.0"  # noqa: S104 - a pod listens on its own address
    assert settings.server.port == c["ports"][0]["containerPort"]
    assert settings.credentials, "at least one credential"
    for credential in settings.credentials:
        assert credential.secret_env is not None, "secrets come from the Secret, never the file"
    for client in settings.server.clients:
        assert client.token_env is not None
    # several replicas must share the quota: Redis is required, from the Secret
    assert settings.redis.url
    required = [e for e in c["env"] if e["name"] == "TAOGATE_REDIS__URL"]
    assert required[0]["valueFrom"]["secretKeyRef"].get("optional") is not True
    assert "TAOGATE_REDIS__URL" in secret_values(overlay)
    # the pod mounts the ConfigMap and reads the Secret that the overlay actually has
    volumes = {
        v["name"]: v
        for v in named(overlay, "Deployment", "taogate")["spec"]["template"]["spec"]["volumes"]
    }
    assert (
        volumes["config"]["configMap"]["name"]
        == named(overlay, "ConfigMap", "taogate-config")["metadata"]["name"]
    )
    secret_name = c["envFrom"][0]["secretRef"]["name"]
    assert secret_name.startswith("taogate-secrets")


def test_autoscaling_bounds_and_local_share(
    overlay: list[Doc], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hpa = named(overlay, "HorizontalPodAutoscaler", "taogate")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "taogate",
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 20)
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # a replica that starts without Redis takes 1/expected_replicas of each key: with that at
    # the HPA's maximum, replicas started during an outage cannot add up past the quota
    settings = settings_of(overlay, tmp_path, monkeypatch)
    assert settings.redis.expected_replicas >= hpa["maxReplicas"]


def test_service_and_disruption_budget_select_the_pods(overlay: list[Doc]) -> None:
    service = named(overlay, "Service", "taogate")["spec"]
    assert service["selector"] == LABELS
    assert service["ports"][0]["targetPort"] == "http"
    pdb = named(overlay, "PodDisruptionBudget", "taogate")["spec"]
    assert pdb["selector"]["matchLabels"] == LABELS
    assert pdb["maxUnavailable"] == 1


def test_every_pod_meets_the_restricted_pod_security_standard(overlay: list[Doc]) -> None:
    for deployment in (d for d in overlay if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, deployment["metadata"]["name"]
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert ":" in c["image"], "a tagged image"
            assert not c["image"].endswith(":latest")


def test_dev_overlay_runs_redis_and_the_simulator() -> None:
    docs = render(KUBE / "overlays" / "dev")
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] != "Namespace"} == {"taogate-dev"}
    named(docs, "Deployment", "taogate-redis")
    named(docs, "Deployment", "taogate-sim")
    secrets = secret_values(docs)
    assert secrets["TAOGATE_REDIS__URL"] == "redis://taogate-redis:6379/0"
    namespace = named(docs, "Namespace", "taogate-dev")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_production_overlay_names_an_image_and_generates_no_secret() -> None:
    docs = render(KUBE / "overlays" / "production")
    assert not [d for d in docs if d["kind"] == "Secret"], "the Secret is created out of band"
    image = container(named(docs, "Deployment", "taogate"))["image"]
    assert "/" in image, "a registry path, not the bare local name"
    assert {d["metadata"]["namespace"] for d in docs} == {"taogate"}
