"""The MLflow model registry: bootstrap, training runs, versions, aliases, promote and rollback, model folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from catdog.ml.predictor import model_version
from catdog.registry import ModelVersionInfo, NothingToRollBack, Registry, RegistryError, UnknownVersion
from tests.registry.conftest import FINGERPRINT

DATASET = {
    "name": "catsdogs-train+uploads",
    "digest": "ab" * 32,
    "counts": {"cats": 4050, "dogs": 4055},
    "uploads": 100,
    "root": "/data/catsdogs/train",
}
HISTORY = [
    {"epoch": 1, "train_loss": 0.5, "val_accuracy": 0.9, "lr": 0.001},
    {"epoch": 2, "train_loss": 0.25, "val_accuracy": 0.95, "lr": 0.0003},
]
TEST_METRICS = {
    "n": 1623,
    "accuracy": 0.99,
    "precision": 0.98,
    "recall": 0.97,
    "f1": 0.975,
    "roc_auc": None,  # not logged (a one-class split has none)
    "log_loss": 0.04,
    "confusion_matrix": [[1, 0], [0, 1]],  # not a number: not logged
}


def run_of(registry: Registry, info: ModelVersionInfo) -> Any:
    assert info.run_id is not None
    return registry.client.get_run(info.run_id)


def log_run(registry: Registry, model_dir: Path, **overrides: Any) -> ModelVersionInfo:
    kwargs: dict[str, Any] = {
        "source": "retrain",
        "params": {"epochs": 2, "head": {"hidden": [256, 128]}, "extra_data": ["/state/uploads"]},
        "history": HISTORY,
        "test_metrics": TEST_METRICS,
        "dataset": DATASET,
    }
    return registry.log_training_run(model_dir, **{**kwargs, **overrides})


def test_bootstrap_registers_the_shipped_models_with_vgg16_in_production(registry: Registry, settings: Any) -> None:
    assert registry.aliases() == {}
    assert registry.versions() == []

    done = registry.bootstrap()

    assert [(v.version, v.backbone, v.source) for v in done] == [
        (1, "vgg16", "shipped"),
        (2, "efficientnet_lite0", "shipped"),
    ]
    assert registry.aliases() == {"production": 1}
    vgg = registry.get(1)
    assert vgg.aliases == ("production",)
    assert vgg.model_version == model_version(settings.models_dir / "vgg16", "vgg16")
    assert vgg.metrics["accuracy"] == pytest.approx(0.985)
    assert vgg.metrics["n"] == 40
    assert vgg.tags["gate_verdict"] == "shipped"
    assert (vgg.model_dir / "model.onnx").read_bytes() == (settings.models_dir / "vgg16" / "model.onnx").read_bytes()
    run = run_of(registry, vgg)
    assert run.data.params["head.hidden"] == "[8]"
    assert run.data.params["backbone"] == "vgg16"
    steps = registry.client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [(m.step, round(m.value, 3)) for m in steps] == [(1, 0.6), (2, 0.7), (3, 0.8)]
    assert run.inputs.dataset_inputs[0].dataset.digest == FINGERPRINT[:36]

    # idempotent: a second call (another process starting) registers nothing
    assert registry.bootstrap() == []
    assert Registry(settings).bootstrap() == []
    assert [v.version for v in registry.versions()] == [2, 1]


def test_bootstrap_takes_int8_metrics_and_skips_models_without_a_graph(registry: Registry, settings: Any) -> None:
    lite = settings.models_dir / "efficientnet_lite0"
    (lite / "metrics.json").rename(lite / "metrics_int8.json")
    (settings.models_dir / "unbuilt").mkdir()
    (settings.models_dir / "unbuilt" / "model_config.json").write_text('{"backbone": "vgg16"}')

    done = registry.bootstrap()

    assert [v.backbone for v in done] == ["vgg16", "efficientnet_lite0"]
    assert done[1].metrics["accuracy"] == pytest.approx(0.97)
    assert run_of(registry, done[1]).data.metrics["test_int8_accuracy"] == pytest.approx(0.97)


def test_bootstrap_finishes_what_a_crash_left_and_keeps_an_existing_production(
    registry: Registry, settings: Any, trained: Any
) -> None:
    first = log_run(registry, trained(), source="train")
    registry.promote(first.version)

    done = registry.bootstrap()

    assert [v.source for v in done] == ["shipped", "shipped"]
    assert registry.aliases() == {"production": first.version}


def test_log_training_run_records_a_run_and_a_version(registry: Registry, settings: Any, trained: Any) -> None:
    registry.bootstrap()
    model_dir = trained()

    info = log_run(registry, model_dir, parent_version=1, tags={"gate_verdict": "staging", "gate_reason": "worse"})

    assert info.version == 3
    assert info.source == "retrain"
    assert info.aliases == ()
    assert registry.aliases() == {"production": 1}  # no alias change
    assert info.model_version == model_version(model_dir, "vgg16")
    assert info.metrics == {
        "accuracy": 0.99,
        "precision": 0.98,
        "recall": 0.97,
        "f1": 0.975,
        "roc_auc": None,
        "log_loss": 0.04,
        "n": 1623.0,
    }
    assert info.tags["parent_version"] == "1"
    assert info.tags["data_digest"] == "ab" * 32
    assert info.created_at.endswith("Z")

    experiment = registry.client.get_experiment_by_name(settings.experiment)
    assert experiment is not None
    assert experiment.artifact_location == settings.artifact_root
    run = run_of(registry, info)
    assert run.info.experiment_id == experiment.experiment_id
    assert run.info.status == "FINISHED"
    assert run.data.params["head.hidden"] == "[256, 128]"
    assert run.data.params["extra_data"] == '["/state/uploads"]'
    assert run.data.metrics["test_accuracy"] == 0.99
    assert "test_roc_auc" not in run.data.metrics
    assert "test_confusion_matrix" not in run.data.metrics
    lr = registry.client.get_metric_history(run.info.run_id, "lr")
    assert [(m.step, m.value) for m in lr] == [(1, 0.001), (2, 0.0003)]
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "catsdogs-train+uploads"
    assert dataset_input.dataset.digest == ("ab" * 32)[:36]
    assert json.loads(dataset_input.dataset.profile) == {
        "fingerprint": "ab" * 32,
        "counts": {"cats": 4050, "dogs": 4055},
        "uploads": 100,
    }
    files = {a.path for a in registry.client.list_artifacts(run.info.run_id, "model")}
    assert {"model/model.onnx", "model/model_config.json", "model/plots"} <= files
    assert {a.path for a in registry.client.list_artifacts(run.info.run_id, "model/plots")} == {
        "model/plots/confusion_matrix.png",
        "model/plots/roc_curve.png",
    }
    assert info.model_dir == registry.local_model_dir(3)
    assert (info.model_dir / "model.onnx").read_bytes() == (model_dir / "model.onnx").read_bytes()
    assert info.model_dir.is_relative_to(settings.state_dir / "mlartifacts")

    shape = info.to_dict()
    assert shape["gate"] == {"verdict": "staging", "reason": "worse", "checks": []}  # no gate_checks tag
    assert shape["parent_version"] == 1
    assert shape["data"] == {"digest": "ab" * 32, "counts": {"cats": 4050, "dogs": 4055}, "uploads": 100}
    assert shape["plots"] == {
        "confusion_matrix": "/api/models/3/plots/confusion_matrix.png",
        "roc_curve": "/api/models/3/plots/roc_curve.png",
    }
    assert shape["metrics"]["n"] == 1623
    assert json.loads(json.dumps(shape)) == shape


def test_log_training_run_refuses_what_is_not_a_model(registry: Registry, tmp_path: Path, trained: Any) -> None:
    with pytest.raises(ValueError, match="not a model directory"):
        log_run(registry, tmp_path)
    with pytest.raises(ValueError, match="source must be one of"):
        log_run(registry, trained(), source="nightly")
    assert registry.versions() == []


def test_a_failed_registration_marks_the_run_failed(
    registry: Registry, trained: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(registry.client, "create_model_version", refuse)
    with pytest.raises(OSError, match="disk full"):
        log_run(registry, trained())
    experiment = registry.client.get_experiment_by_name("catdog")
    assert experiment is not None
    (run,) = registry.client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    assert registry.versions() == []


def test_promote_and_rollback_chain(registry: Registry, trained: Any) -> None:
    registry.bootstrap()  # 1 vgg16 (production), 2 lite0
    three = log_run(registry, trained()).version
    registry.set_alias("staging", three)

    assert registry.promote(2) == (2, 1)
    assert registry.get(2).tags["previous_production"] == "1"
    assert registry.promote(3, reason="gate") == (3, 2)
    assert registry.aliases() == {"production": 3}  # staging on the promoted version is dropped
    assert registry.get(3).tags["promote_reason"] == "gate"
    assert registry.promote(3) == (3, 3)  # already production: nothing changes

    assert registry.rollback() == (2, 3)
    assert registry.aliases() == {"production": 2}
    assert registry.rollback() == (1, 2)
    with pytest.raises(NothingToRollBack, match="first production version"):
        registry.rollback()
    assert registry.aliases() == {"production": 1}

    # rollback is an undo: promote 2, promote 1, back to 2, back to 1, then nothing
    registry.promote(2)
    registry.promote(1)
    assert registry.rollback() == (2, 1)
    assert registry.rollback() == (1, 2)
    with pytest.raises(NothingToRollBack):
        registry.rollback()


def test_rollback_passes_over_versions_that_failed_to_load(registry: Registry, trained: Any) -> None:
    registry.bootstrap()  # 1 vgg16 (production), 2 lite0
    three = log_run(registry, trained()).version
    registry.promote(2)
    registry.promote(three)
    assert registry.rollback(skip={2: "broken"}) == (1, three)  # not to 2: it would not load
    assert registry.aliases() == {"production": 1}
    registry.promote(2)
    with pytest.raises(NothingToRollBack, match=r"earlier production versions \(1\) failed to load"):
        registry.rollback(skip={1: "broken"})
    assert registry.aliases() == {"production": 2}


def test_rollback_without_production(registry: Registry) -> None:
    with pytest.raises(NothingToRollBack, match="no production version"):
        registry.rollback()


def test_rollback_after_production_was_set_elsewhere(registry: Registry) -> None:
    registry.bootstrap()
    registry.set_alias("production", 2)  # e.g. in the MLflow UI
    assert registry.rollback() == (1, 2)


def test_unknown_versions_are_one_line_errors(registry: Registry) -> None:
    registry.bootstrap()
    for call in (
        lambda: registry.get(99),
        lambda: registry.promote(99),
        lambda: registry.set_alias("staging", 99),
        lambda: registry.set_tags(99, {"a": "b"}),
        lambda: registry.local_model_dir(99),
        lambda: registry.get(0),
    ):
        with pytest.raises(UnknownVersion) as caught:
            call()
        assert "\n" not in str(caught.value)
    assert isinstance(UnknownVersion("x"), ValueError)  # a UsageProblem: the CLI exits 2
    assert registry.aliases() == {"production": 1}


def test_aliases_and_tags(registry: Registry) -> None:
    registry.bootstrap()
    registry.set_alias("staging", 2)
    assert registry.aliases() == {"production": 1, "staging": 2}
    assert registry.get(2).aliases == ("staging",)
    registry.set_tags(2, {"gate_verdict": "staging", "gate_reason": "accuracy 0.97 < 0.985 - 0.005"})
    gate = registry.get(2).to_dict()["gate"]
    assert gate == {"verdict": "staging", "reason": "accuracy 0.97 < 0.985 - 0.005", "checks": []}
    registry.delete_alias("staging")
    registry.delete_alias("staging")  # already gone: nothing happens
    assert registry.aliases() == {"production": 1}


def test_download_of_a_remote_model_is_atomic_and_cached(
    registry: Registry, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path s3:// stores take, fed a file:// URI (the same MLflow download call)."""
    import mlflow.artifacts

    registry.bootstrap()
    source = registry.client.get_model_version_download_uri("catdog", "1")

    local = registry._download(1, source)

    assert local == settings.state_dir / "registry-cache" / "1"
    assert (local / "model.onnx").read_bytes() == (settings.models_dir / "vgg16" / "model.onnx").read_bytes()
    assert (local / "plots" / "roc_curve.png").is_file()
    assert [p.name for p in local.parent.iterdir()] == ["1"]  # no temporary folder left

    def offline(**kwargs: Any) -> str:
        raise AssertionError("downloaded again")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", offline)
    assert registry._download(1, source) == local  # cached

    monkeypatch.undo()
    other = registry.client.get_model_version_download_uri("catdog", "2")
    assert registry._download(1, other) == local  # another store's version 1: replaced
    assert (local / "model.onnx").read_bytes() == (
        settings.models_dir / "efficientnet_lite0" / "model.onnx"
    ).read_bytes()
    assert [p.name for p in local.parent.iterdir()] == ["1"]


def test_a_bad_tracking_uri_is_one_line(settings: Any) -> None:
    with pytest.raises(RegistryError, match="cannot open the MLflow store") as caught:
        Registry(settings.model_copy(update={"mlflow_tracking_uri": "nosuchscheme://x"}))
    assert "\n" not in str(caught.value)


def test_telemetry_is_off() -> None:
    from mlflow.telemetry import get_telemetry_client

    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert get_telemetry_client() is None


RACE = """
import sys, time
from catdog.registry import Registry
from catdog.settings import Settings
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
registry = Registry(Settings(state_dir=sys.argv[1]))
print(registry.aliases())
"""


def test_two_processes_creating_the_store_at_once(tmp_path: Path) -> None:
    """Without the lock one of two fresh processes fails in MLflow's migrations ("table already exists")."""
    import time

    start = str(time.time() + 4)  # both past their imports, then both open the fresh store together
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATDOG_MLFLOW")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, str(tmp_path / "state"), start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    results = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-2000:]
        assert out.strip() == "{}"
