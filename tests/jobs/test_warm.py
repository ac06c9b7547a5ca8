"""The idle worker's feature-cache warmer: it fills exactly what a retrain reads, pauses for jobs, resumes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from catdog.jobs import warm
from catdog.jobs.warm import FeatureWarmer, make_plan, read_status
from catdog.ml.train import config_from_recipe
from catdog.registry import Registry
from catdog.settings import PROJECT_ROOT, Settings

from .conftest import retrain_settings
from .test_retrain import _job, _new_job


@pytest.fixture
def cold(tmp_path: Path, shipped_lite0: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Production is the tiny Lite0 model; the feature cache is empty; warming is on."""
    monkeypatch.setenv("CATDOG_FEATURES_DIR", str(tmp_path / "features"))
    monkeypatch.setenv("CATDOG_WARM_FEATURES", "true")
    settings = retrain_settings(tmp_path, shipped_lite0)
    Registry(settings).bootstrap()
    return settings


def _cached(settings: Settings) -> int:
    return sum(
        sqlite3.connect(path).execute("SELECT COUNT(*) FROM features").fetchone()[0]
        for path in settings.features_dir.glob("*.sqlite")
    )


def test_a_warmed_cache_leaves_a_retrain_no_backbone_pass(cold: Settings) -> None:
    assert read_status(cold)["state"] == "off"  # no worker has looked yet
    warmer = FeatureWarmer(cold, busy=lambda: False)
    warmer.step()
    status = read_status(cold)
    assert status["state"] == "ready", status
    assert status["done"] == status["total"] > 0 and status["backbone"] == "efficientnet_lite0"
    plan = make_plan(cold, Registry(cold).get(1))
    assert not isinstance(plan, str) and not any(part.todo for part in plan.parts)
    assert {part.what for part in plan.parts} >= {"training views", "test split", "drift reference (fp32)"}
    rows = _cached(cold)
    assert rows == status["total"]

    job_id = _new_job(cold)
    from catdog.jobs.retrain import run_retrain_job

    run_retrain_job(job_id, cold)
    view = _job(cold, job_id)
    assert view["status"] == "succeeded", view["error"]
    assert _cached(cold) == rows  # training, the label check and the evaluation found every feature cached
    recipe = view["recipe"]
    assert isinstance(recipe, dict) and recipe["from_version"] == 1 and recipe["views"] == 2
    checks = view["gate_checks"]  # the job's status carries the gate's checks, as /api/models does
    assert isinstance(checks, list) and [c["name"] for c in checks] == ["production", "mcnemar", "reference", "floor"]


def test_the_warmer_pauses_for_a_job_and_resumes_where_it_stopped(
    cold: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert FeatureWarmer(cold, busy=lambda: True).step() == warm.BUSY_POLL_SECONDS
    assert read_status(cold)["state"] == "paused" and _cached(cold) == 0

    monkeypatch.setattr(warm, "STEP_IMAGES", 4)
    answers = iter([False, False, True])  # free for the first look and step, then a job starts
    warmer = FeatureWarmer(cold, busy=lambda: next(answers, True))
    warmer.step()
    status = read_status(cold)
    assert status["state"] == "paused" and 0 < status["done"] < status["total"], status
    part = _cached(cold)
    assert part == status["done"]

    warmer.busy = lambda: False
    warmer.step()  # a new look resumes from the cache: nothing done twice
    status = read_status(cold)
    assert status["state"] == "ready" and _cached(cold) == status["total"]


def test_the_status_file_is_replaced_whole(cold: Settings) -> None:
    warm.write_status(cold, state="warming", done=1, total=2)
    assert json.loads(warm.status_path(cold).read_text())["done"] == 1
    assert not list(cold.state_dir.glob(".*.part"))


def test_warming_off_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATDOG_WARM_FEATURES", "false")
    assert read_status(Settings(state_dir=tmp_path))["state"] == "off"


def test_a_retrain_follows_the_recipe_of_the_version_it_retrains() -> None:
    shipped = json.loads((PROJECT_ROOT / "models" / "vgg16" / "model_config.json").read_text())["training"]
    config = config_from_recipe(shipped, data="d", out="o", backbone="vgg16", extra_data=["u"])
    assert config.views == shipped["views"] == 1  # the shipped VGG16 trained on one view per image
    assert config.epochs == shipped["epochs"] and config.head.hidden == shipped["head"]["hidden"]
    assert (config.data, config.out, config.extra_data) == ("d", "o", ["u"])
    assert config_from_recipe({}, data="d", out="o").views == 2  # nothing recorded: the defaults


def test_a_file_deleted_after_the_plan_is_no_error_of_the_warmer(cold: Settings, tmp_path: Path) -> None:
    """An upload deleted between the plan and its extraction: skipped, never the "error" state (seen in CI)."""
    import dataclasses

    plan = make_plan(cold, Registry(cold).get(1))
    assert not isinstance(plan, str)
    part = plan.parts[0]
    gone = dataclasses.replace(part.todo[0], path=tmp_path / "deleted-upload.jpg", sha256="0" * 64)
    plan.parts[0] = dataclasses.replace(part, todo=[gone, *part.todo])
    assert FeatureWarmer(cold, busy=lambda: False).warm(plan) is True
    assert read_status(cold)["state"] == "ready"
