"""The Kubernetes deployment (deploy/k8s): every overlay builds with kustomize, passes
kubernetes-validate --strict and checkov with the committed skips only, and says what the platform
needs (probes, resources, the security context, autoscaling on in-flight images and CPU, a
disruption budget, the secrets). The tools come from deploy/lint.sh's own venv (~/.cache/catdog/lint-venv,
made on first use from deploy/requirements-lint.txt); kubectl's built-in kustomize renders.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
LINT_SH = ROOT / "deploy" / "lint.sh"
CHECKOV_CONFIG = K8S / ".checkov.yaml"
CACHE_DIR = Path(os.environ.get("CATDOG_CACHE_DIR", Path.home() / ".cache" / "catdog"))
LINT_VENV = Path(os.environ.get("CATDOG_LINT_VENV", CACHE_DIR / "lint-venv"))
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
# oldest Kubernetes the manifests support and the newest schema kubernetes-validate bundles (as deploy/lint.sh)
KUBE_VERSIONS = ("1.30.0", "1.37.0")
SECRET = "catdog-secrets"
# what production's Secret must hold: deploy/k8s/overlays/production/secret.template.env
SECRET_TEMPLATE = K8S / "overlays" / "production" / "secret.template.env"

Doc = dict[str, Any]


# --- tools ---------------------------------------------------------------------------------------


def lint_tool(name: str) -> Path:
    """A tool of deploy/lint.sh's venv, made first if missing (PyPI once); skips when it cannot be had."""
    tool = LINT_VENV / "bin" / name
    if not tool.exists() or not (LINT_VENV / ".requirements-sha256").exists():
        try:
            done = subprocess.run(
                ["bash", str(LINT_SH), "--setup"], capture_output=True, text=True, timeout=600, check=False
            )
        except subprocess.TimeoutExpired:
            pytest.skip("the lint tools' venv could not be made within 10 minutes (deploy/lint.sh --setup)")
        if done.returncode != 0:
            pytest.skip(f"the lint tools' venv could not be made (deploy/lint.sh --setup): {done.stdout[-800:]}")
    if not tool.exists():
        pytest.skip(f"{tool} is missing after deploy/lint.sh --setup")
    return tool


def kustomize(directory: Path) -> str:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (its built-in kustomize renders the overlays)")
    done = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"kustomize build {directory} failed:\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def rendered_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("k8s")
    files = {}
    for overlay in OVERLAYS:
        files[overlay] = out / f"{overlay}.yaml"
        files[overlay].write_text(kustomize(K8S / "overlays" / overlay))
    return files


@pytest.fixture(scope="module")
def rendered(rendered_files: dict[str, Path]) -> dict[str, list[Doc]]:
    return {name: [d for d in yaml.safe_load_all(path.read_text()) if d] for name, path in rendered_files.items()}


@pytest.fixture(scope="module")
def checkov_results(rendered_files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """checkov once per overlay (it is the slow tool), JSON results by overlay."""
    checkov = lint_tool("checkov")
    results = {}
    for overlay, path in rendered_files.items():
        command = [str(checkov), "--skip-download", "--config-file", str(CHECKOV_CONFIG), "--framework", "kubernetes"]
        done = subprocess.run(
            [*command, "-f", str(path), "-o", "json"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=path.parent,
        )
        report = json.loads(done.stdout)
        report = report[0] if isinstance(report, list) else report
        results[overlay] = {"returncode": done.returncode, "report": report, "stderr": done.stderr}
    return results


# --- helpers: find things in rendered manifests ---------------------------------------------------


def objects(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def images(docs: list[Doc]) -> list[str]:
    return [c["image"] for _, spec in pod_specs(docs) for c in spec.get("initContainers", []) + spec["containers"]]


def secure_container_problems(container: Doc, pod: Doc) -> list[str]:
    """What the restricted security context of a catdog container lacks (empty: nothing)."""
    problems = []
    sc = container.get("securityContext", {})
    pod_sc = pod.get("securityContext", {})
    name = container["name"]
    if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
        problems.append(f"{name}: runAsNonRoot is not set")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{name}: the root filesystem is writable")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{name}: privilege escalation is allowed")
    if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
        problems.append(f"{name}: capabilities are not all dropped")
    seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
    if seccomp.get("type") != "RuntimeDefault":
        problems.append(f"{name}: no RuntimeDefault seccomp profile")
    return problems


def ml_app_problems(deployment: Doc) -> list[str]:
    """What the ml-app Deployment lacks of what the platform needs (empty: nothing)."""
    problems = []
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    if "ml-app" not in containers:
        return ["no container named ml-app"]
    app = containers["ml-app"]
    expected_probes = {"startupProbe": "/ready", "readinessProbe": "/ready", "livenessProbe": "/health"}
    for probe, path in expected_probes.items():
        got = app.get(probe, {}).get("httpGet", {}).get("path")
        if got != path:
            problems.append(f"{probe} should GET {path}, has {got}")
    ports = {p.get("name"): p["containerPort"] for p in app.get("ports", [])}
    if ports.get("http") != 8000:
        problems.append(f"container port http should be 8000, ports are {ports}")
    for part in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in app.get("resources", {}).get(part, {}):
                problems.append(f"no {resource} {part}")
    problems += secure_container_problems(app, pod)
    if pod.get("securityContext", {}).get("runAsUser") != 10001:
        problems.append("the pod does not run as uid 10001")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("a service account token is mounted")
    mounts = {m["mountPath"]: m for m in app.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for path in ("/tmp", "/tmp/catdog-metrics"):
        if path not in mounts or "emptyDir" not in volumes.get(mounts[path]["name"], {}):
            problems.append(f"{path} is not an emptyDir")
    state = volumes.get(mounts.get("/var/lib/catdog", {}).get("name", ""), {})
    if state.get("persistentVolumeClaim", {}).get("claimName") != "catdog-state":
        problems.append("/var/lib/catdog is not the shared PVC catdog-state")
    if mounts.get("/data", {}).get("readOnly") is not True:
        problems.append("the data set /data is not mounted read-only")
    env = env_of(app)
    if env.get("CATDOG_WORKER", {}).get("value") != "false":
        problems.append("CATDOG_WORKER is not false (an API pod would start a job worker)")
    threads = env.get("CATDOG_THREADS", {}).get("valueFrom", {}).get("resourceFieldRef", {})
    if threads.get("resource") != "limits.cpu":
        problems.append("CATDOG_THREADS does not follow the CPU limit")
    for key in ("CATDOG_ADMIN_TOKEN", "CATDOG_DATABASE_URL"):
        if not env.get(key, {}).get("valueFrom", {}).get("secretKeyRef"):
            problems.append(f"{key} does not come from a Secret")
    return problems


def read_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


# --- build, schema, policy ------------------------------------------------------------------------


def test_every_overlay_is_found() -> None:
    assert {"local", "production"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds(rendered: dict[str, list[Doc]], overlay: str) -> None:
    kinds = {d["kind"] for d in rendered[overlay]}
    expected = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress", "ConfigMap"}
    assert expected <= kinds
    assert all(d["metadata"].get("namespace") == "catdog" for d in rendered[overlay] if d["kind"] != "Namespace")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_validate_strict(rendered_files: dict[str, Path], overlay: str) -> None:
    validate = lint_tool("kubernetes-validate")
    for version in KUBE_VERSIONS:
        done = subprocess.run(
            [str(validate), "--strict", "--quiet", "-k", version, str(rendered_files[overlay])],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"{overlay} against Kubernetes {version}:\n{done.stdout}{done.stderr}"


def test_kubernetes_validate_strict_rejects_an_unknown_field(rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    """--strict is what catches a misspelt field: the check can fail."""
    validate = lint_tool("kubernetes-validate")
    pdb = copy.deepcopy(one(rendered["production"], "PodDisruptionBudget", "ml-app"))
    pdb["spec"]["maxUnavailabel"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(pdb))
    done = subprocess.run([str(validate), "--strict", "--quiet", str(path)], capture_output=True, text=True)
    assert done.returncode != 0
    assert "maxUnavailabel" in done.stdout + done.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_passes_with_committed_skips_only(checkov_results: dict[str, dict[str, Any]], overlay: str) -> None:
    result = checkov_results[overlay]
    results = result["report"]["results"]
    failed = [f"{c['check_id']} {c['resource']}" for c in results.get("failed_checks", [])]
    assert result["returncode"] == 0 and not failed, f"checkov failures in {overlay}: {failed}\n{result['stderr']}"
    assert result["report"]["summary"]["passed"] > 100  # it did check the manifests
    global_skips = set(yaml.safe_load(CHECKOV_CONFIG.read_text())["skip-check"])
    config_text = CHECKOV_CONFIG.read_text()
    for skipped in results.get("skipped_checks", []):
        check = skipped["check_id"]
        reason = (skipped.get("check_result") or {}).get("suppress_comment") or ""
        # a resource-scoped skip (annotation) carries its reason and is listed in .checkov.yaml
        assert check in global_skips or (reason.strip() and check in config_text), f"unexplained skip {check}"


def test_every_global_checkov_skip_has_a_reason() -> None:
    lines = CHECKOV_CONFIG.read_text().splitlines()
    for check in yaml.safe_load(CHECKOV_CONFIG.read_text())["skip-check"]:
        reasons = [line for line in lines if line.lstrip().startswith(f"# {check}:")]
        assert reasons and len(reasons[0].split(":", 1)[1].strip()) > 20, f"{check} is skipped without a reason"


def test_checkov_skip_annotations_only_in_the_worker_and_local_images(rendered: dict[str, list[Doc]]) -> None:
    for overlay, docs in rendered.items():
        for d in docs:
            skips = {k: v for k, v in d["metadata"].get("annotations", {}).items() if k.startswith("checkov.io/skip")}
            for value in skips.values():
                check, _, reason = value.partition("=")
                assert reason.strip(), f"{overlay} {d['metadata']['name']}: {check} skipped without a reason"
            if overlay == "production" and d["metadata"]["name"] != "catdog-worker":
                assert not skips, f"production {d['kind']} {d['metadata']['name']} skips checks: {skips}"


# --- what the platform needs ----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ml_app_has_probes_resources_and_security(rendered: dict[str, list[Doc]], overlay: str) -> None:
    assert ml_app_problems(one(rendered[overlay], "Deployment", "ml-app")) == []


def test_the_ml_app_check_catches_what_is_missing(rendered: dict[str, list[Doc]]) -> None:
    good = one(rendered["production"], "Deployment", "ml-app")
    bad = copy.deepcopy(good)
    container = bad["spec"]["template"]["spec"]["containers"][0]
    del container["livenessProbe"]
    container["readinessProbe"]["httpGet"]["path"] = "/health"
    container["securityContext"]["readOnlyRootFilesystem"] = False
    del container["resources"]["limits"]["memory"]
    problems = ml_app_problems(bad)
    assert any(p.startswith("livenessProbe") for p in problems)
    assert any(p.startswith("readinessProbe") for p in problems)
    assert any("root filesystem is writable" in p for p in problems)
    assert "no memory limits" in problems
    assert ml_app_problems(good) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_restricted(rendered: dict[str, list[Doc]], overlay: str) -> None:
    problems = []
    for name, pod in pod_specs(rendered[overlay]):
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: service account token mounted")
        for container in pod.get("initContainers", []) + pod["containers"]:
            problems += [f"{name}/{p}" for p in secure_container_problems(container, pod)]
            if not {"cpu", "memory"} <= set(container.get("resources", {}).get("limits", {})):
                problems.append(f"{name}/{container['name']}: no CPU or memory limit")
    assert problems == []
    namespace = one(rendered[overlay], "Namespace", "catdog")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_on_inflight_images_and_cpu(rendered: dict[str, list[Doc]], overlay: str) -> None:
    hpa = one(rendered[overlay], "HorizontalPodAutoscaler", "ml-app")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ml-app"}
    metrics = hpa["spec"]["metrics"]
    pods = [m["pods"] for m in metrics if m["type"] == "Pods"]
    cpu = [m["resource"] for m in metrics if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert [p["metric"]["name"] for p in pods] == ["catdog_inflight_images"]
    assert pods[0]["target"]["type"] == "AverageValue"
    assert cpu and cpu[0]["target"]["type"] == "Utilization"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # the HPA owns the replica count
    assert "replicas" not in one(rendered[overlay], "Deployment", "ml-app")["spec"]


def test_production_scales_from_3_to_20(rendered: dict[str, list[Doc]]) -> None:
    hpa = one(rendered["production"], "HorizontalPodAutoscaler", "ml-app")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
    pod = one(rendered["production"], "Deployment", "ml-app")["spec"]["template"]["spec"]
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


def test_the_adapter_rule_serves_the_metric_the_hpa_reads(rendered: dict[str, list[Doc]]) -> None:
    values = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    hpa = one(rendered["production"], "HorizontalPodAutoscaler", "ml-app")
    pods_metric = next(m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods")
    assert rule["name"]["as"] == pods_metric
    assert re.match(rule["name"]["matches"], "catdog_queue_depth")
    assert rule["seriesQuery"].startswith("catdog_queue_depth{")
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    # the gauge the rule reads is the one the app exports
    assert '"catdog_queue_depth"' in (ROOT / "src" / "catdog" / "web" / "metrics.py").read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pdb_covers_the_ml_app_pods(rendered: dict[str, list[Doc]], overlay: str) -> None:
    pdb = one(rendered[overlay], "PodDisruptionBudget", "ml-app")
    labels = one(rendered[overlay], "Deployment", "ml-app")["spec"]["template"]["metadata"]["labels"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_is_one_pod_that_finishes_its_job(rendered: dict[str, list[Doc]], overlay: str) -> None:
    worker = one(rendered[overlay], "Deployment", "catdog-worker")
    assert worker["spec"]["replicas"] == 1
    assert worker["spec"]["strategy"]["type"] == "Recreate"
    pod = worker["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 120
    (container,) = pod["containers"]
    assert container["args"] == ["worker"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert not mounts["/var/cache/catdog/features"].get("readOnly")
    assert mounts["/data"]["readOnly"] is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_server_command(rendered: dict[str, list[Doc]], overlay: str) -> None:
    mlflow = one(rendered[overlay], "Deployment", "catdog-mlflow")
    (container,) = mlflow["spec"]["template"]["spec"]["containers"]
    command = " ".join(container["command"])
    assert "mlflow server --host=0.0.0.0 --port=5000" in command
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in command
    assert "--allowed-hosts=" in command
    env = env_of(container)
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["key"] == "MLFLOW_BACKEND_STORE_URI"
    service = one(rendered[overlay], "Service", "catdog-mlflow")
    assert service["spec"]["ports"][0]["port"] == 5000


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_is_nginx_with_upload_limits(rendered: dict[str, list[Doc]], overlay: str) -> None:
    ingress = one(rendered[overlay], "Ingress", "ml-app")
    annotations = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "200m"  # the API's own limits decide
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "120"
    if overlay == "production":
        assert ingress["spec"]["tls"][0]["secretName"]


def test_production_images_are_pinned(rendered: dict[str, list[Doc]]) -> None:
    for image in images(rendered["production"]):
        name, _, tag = image.rpartition(":")
        assert "@sha256:" in image or (name and "/" not in tag and tag not in ("", "latest")), image
        assert image.startswith("ghcr.io/catdog/")


def test_local_runs_the_images_built_here(rendered: dict[str, list[Doc]]) -> None:
    catdog = [i for i in images(rendered["local"]) if i.startswith("catdog-")]
    assert set(catdog) == {"catdog-serve:latest", "catdog-worker:latest", "catdog-mlflow:latest"}
    for name, pod in pod_specs(rendered["local"]):
        for container in pod.get("initContainers", []) + pod["containers"]:
            if container["image"].startswith("catdog-"):
                assert container["imagePullPolicy"] == "IfNotPresent", name


def test_local_secret_holds_the_admin_token_and_database_url(rendered: dict[str, list[Doc]]) -> None:
    (secret,) = [s for s in objects(rendered["local"], "Secret") if s["metadata"]["name"].startswith(SECRET + "-")]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["CATDOG_ADMIN_TOKEN"]
    assert data["CATDOG_DATABASE_URL"].startswith("postgresql://")
    assert data["CATDOG_QUEUE_URL"].startswith("redis://")
    assert data["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg://")


def test_production_commits_no_secret_and_documents_its_keys(rendered: dict[str, list[Doc]]) -> None:
    assert objects(rendered["production"], "Secret") == []
    template = read_env_file(SECRET_TEMPLATE)
    assert {"CATDOG_ADMIN_TOKEN", "CATDOG_DATABASE_URL", "CATDOG_QUEUE_URL", "MLFLOW_BACKEND_STORE_URI"} <= set(
        template
    )
    assert all("<" in value for value in template.values()), "real values in a template"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_reference_resolves(rendered: dict[str, list[Doc]], overlay: str) -> None:
    """ConfigMaps, Secrets and PVCs named by pods exist (production's Secret: the template's keys)."""
    docs = rendered[overlay]
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in objects(docs, "ConfigMap")}
    secrets = {d["metadata"]["name"]: d.get("data", {}) for d in objects(docs, "Secret")}
    if overlay == "production":
        secrets[SECRET] = read_env_file(SECRET_TEMPLATE)
    claims = {d["metadata"]["name"] for d in objects(docs, "PersistentVolumeClaim")}
    for name, pod in pod_specs(docs):
        for container in pod.get("initContainers", []) + pod["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in configmaps, name
            for var in container.get("env", []):
                ref = var.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    secret = ref["secretKeyRef"]
                    assert secret["name"] in secrets, f"{name}: Secret {secret['name']}"
                    assert secret.get("optional") or secret["key"] in secrets[secret["name"]], f"{name}: {secret}"
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["key"] in configmaps[ref["configMapKeyRef"]["name"]], name
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, name
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_behind_a_network_policy(rendered: dict[str, list[Doc]], overlay: str) -> None:
    selectors = [p["spec"]["podSelector"].get("matchLabels", {}) for p in objects(rendered[overlay], "NetworkPolicy")]
    for d in objects(rendered[overlay], "Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert any(sel.items() <= labels.items() for sel in selectors), d["metadata"]["name"]


def test_state_volume_is_shared_read_write_many(rendered: dict[str, list[Doc]]) -> None:
    state = one(rendered["production"], "PersistentVolumeClaim", "catdog-state")
    assert state["spec"]["accessModes"] == ["ReadWriteMany"]
    assert state["spec"]["storageClassName"]


def test_every_catdog_variable_is_a_setting(rendered: dict[str, list[Doc]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The CATDOG_* names are real settings (a typo would be silently ignored) and their values parse."""
    from catdog.settings import ENV_PREFIX, Settings, get_settings

    known = {
        str(field.validation_alias) if field.validation_alias else ENV_PREFIX + name.upper()
        for name, field in Settings.model_fields.items()
    }
    docs = rendered["local"]
    config = next(d["data"] for d in objects(docs, "ConfigMap") if d["metadata"]["name"].startswith("catdog-config-"))
    (secret,) = [s for s in objects(docs, "Secret") if s["metadata"]["name"].startswith(SECRET + "-")]
    names = set(config) | set(secret["data"])
    for _, pod in pod_specs(docs):
        for container in pod["containers"]:
            names |= set(env_of(container))
    unknown = {n for n in names if n.startswith(ENV_PREFIX)} - known
    assert unknown == set()
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    for key, value in secret["data"].items():
        if key.startswith(ENV_PREFIX):
            monkeypatch.setenv(key, base64.b64decode(value).decode())
    monkeypatch.setenv("CATDOG_THREADS", "2")
    settings = get_settings()
    assert settings.mode == "production" and settings.admin_token
    assert str(settings.prometheus_dir) == "/tmp/catdog-metrics"
