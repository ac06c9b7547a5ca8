"""Static checks of the container and compose files, as deploy/lint.sh runs them: hadolint on every
Dockerfile, the compose-spec schema (check-jsonschema) and `docker compose config` on every compose
file, yamllint on the deployment YAML. A file that does not exist yet, or a tool this machine lacks,
is a skip that says so. Each tool is also shown to fail on a broken file.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.test_k8s import ROOT, lint_tool

DOCKERFILES = sorted(
    p
    for p in {*ROOT.glob("Dockerfile*"), *(ROOT / "deploy" / "docker").rglob("Dockerfile*")}
    if p.is_file() and not p.name.endswith(".dockerignore")
)
COMPOSE_FILES = sorted({*ROOT.glob("compose.yaml"), *(ROOT / "deploy" / "docker").glob("compose.*.yaml")})
YAMLLINT_CONFIG = ROOT / ".yamllint.yaml"


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def _or_missing(paths: list[Path], what: str) -> list[object]:
    """The files as parameters, or one parameter that skips with the reason."""
    if paths:
        return [pytest.param(p, id=i) for p, i in zip(paths, _ids(paths), strict=True)]
    return [pytest.param(None, id="none", marks=pytest.mark.skip(reason=f"no {what} in the repository yet"))]


def run(command: list[str | Path], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd, timeout=120)


def docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return run(["docker", "compose", "version"]).returncode == 0


# --- Dockerfiles ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", _or_missing(DOCKERFILES, "Dockerfile"))
def test_hadolint(dockerfile: Path) -> None:
    done = run([lint_tool("hadolint"), "--no-color", "--failure-threshold", "warning", dockerfile])
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_fails_on_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\nUSER root\n")
    done = run([lint_tool("hadolint"), "--no-color", "--failure-threshold", "warning", bad])
    assert done.returncode != 0
    assert "DL3006" in done.stdout  # FROM without a tag


# --- compose ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("compose", _or_missing(COMPOSE_FILES, "compose file"))
def test_compose_matches_the_compose_spec(compose: Path) -> None:
    done = run([lint_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", compose])
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_spec_check_fails_on_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  web:\n    image: nginx:1.29\n    restart: sometimes\n    portz: ['80:80']\n")
    done = run([lint_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", bad])
    assert done.returncode != 0


@pytest.mark.parametrize("compose", _or_missing(COMPOSE_FILES, "compose file"))
def test_docker_compose_config(compose: Path) -> None:
    if not docker_compose_available():
        pytest.skip("no `docker compose` command on this machine")
    files = [compose] if compose.name == "compose.yaml" else [ROOT / "compose.yaml", compose]
    if not files[0].exists():
        pytest.skip(f"{compose.name} overrides compose.yaml, which does not exist yet")
    done = run(["docker", "compose", *[a for f in files for a in ("-f", f)], "config", "-q"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_docker_compose_config_fails_on_a_bad_file(tmp_path: Path) -> None:
    if not docker_compose_available():
        pytest.skip("no `docker compose` command on this machine")
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  web:\n    image: nginx:1.29\n    depends_on: [missing]\n")
    done = run(["docker", "compose", "-f", bad, "config", "-q"], cwd=tmp_path)
    assert done.returncode != 0


# --- YAML style -------------------------------------------------------------------------------------


def test_yamllint_deployment_files() -> None:
    targets = [ROOT / "deploy", YAMLLINT_CONFIG, *COMPOSE_FILES]
    done = run([lint_tool("yamllint"), "--config-file", YAMLLINT_CONFIG, *targets])
    assert done.returncode == 0, done.stdout + done.stderr


def test_yamllint_fails_on_a_duplicate_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec:\n  replicas: 1\n  replicas: 2\n")
    done = run([lint_tool("yamllint"), "--config-file", YAMLLINT_CONFIG, bad])
    assert done.returncode != 0
    assert "key-duplicates" in done.stdout
