"""The CLI forms other tools call: exit codes, one-line errors, JSON shapes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CATSDOGS, FIXTURES


def catdog(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "catdog.cli", *args], capture_output=True, text=True, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""


def test_predict_json_one_object_per_line(lite0_model: Path) -> None:
    files = [str(FIXTURES / "pets" / "chelsea.jpg"), str(next((CATSDOGS / "test" / "dogs").iterdir()))]
    result = catdog("predict", "--model", str(lite0_model), *files, "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == files
    for line in lines:
        assert {"path", "predicted_class", "confidence", "probability", "is_pet"} <= set(line)


def test_predict_unreadable_file_exits_2_and_predicts_nothing(lite0_model: Path) -> None:
    good = str(FIXTURES / "pets" / "chelsea.jpg")
    result = catdog("predict", "--model", str(lite0_model), good, str(FIXTURES / "bad" / "truncated.jpg"))
    assert_one_line_error(result)
    assert "truncated.jpg" in result.stderr


def test_predict_missing_file_and_missing_model(tmp_path: Path, lite0_model: Path) -> None:
    assert_one_line_error(catdog("predict", "--model", str(lite0_model), str(tmp_path / "nope.jpg")))
    assert_one_line_error(catdog("predict", "--model", str(tmp_path), str(FIXTURES / "pets" / "chelsea.jpg")))


def test_evaluate_json_on_a_split_folder(lite0_model: Path) -> None:
    result = catdog("evaluate", "--model", str(lite0_model), "--data", str(CATSDOGS / "test"), "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "n"} <= set(metrics)
    assert metrics["n"] == 12


def test_evaluate_on_a_folder_without_classes(lite0_model: Path, tmp_path: Path) -> None:
    assert_one_line_error(catdog("evaluate", "--model", str(lite0_model), "--data", str(tmp_path), "--json"))


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["train", "--data", "x"],
        ["train", "--data", "x", "--out", "y", "--epochs", "0"],
        ["frobnicate"],
        ["train", "--data", "x", "--out", "y", "--hidden", "64,32", "--dropout", "0.5"],
        ["train", "--data", "x", "--out", "y", "--dropout", "1.5,0.2"],
    ],
)
def test_bad_usage_exits_2_with_one_line(args: list[str]) -> None:
    assert_one_line_error(catdog(*args))


def test_train_rejects_an_unknown_backbone(tmp_path: Path) -> None:
    result = catdog("train", "--data", str(CATSDOGS), "--backbone", "nope", "--out", str(tmp_path / "m"))
    assert_one_line_error(result)
    assert "known:" in result.stderr


def test_data_reports_counts() -> None:
    result = catdog("data", str(CATSDOGS))
    assert result.returncode == 0
    assert json.loads(result.stdout)["train"]["counts"] == {"cat": 16, "dog": 16}
