"""The CLI forms other tools call: exit codes, one-line errors, JSON shapes."""

from __future__ import annotations

import json
import os
import shutil
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


def assert_error_lines(result: subprocess.CompletedProcess[str], names: list[str]) -> None:
    """stderr is exactly one `catdog: error: cannot read NAME: reason` line per name, in order."""
    lines = result.stderr.splitlines()
    assert len(lines) == len(names), result.stderr
    for line, name in zip(lines, names, strict=True):
        assert line.startswith(f"catdog: error: cannot read {name}: ") and len(line) > len(name) + 30, line


def test_predict_json_one_object_per_line(lite0_model: Path) -> None:
    files = [str(FIXTURES / "pets" / "chelsea.jpg"), str(next((CATSDOGS / "test" / "dogs").iterdir()))]
    result = catdog("predict", "--model", str(lite0_model), *files, "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == files
    for line in lines:
        assert {"path", "predicted_class", "confidence", "probability", "is_pet"} <= set(line)


def test_predict_one_bad_file_among_several_gets_one_line_and_the_others_are_predicted(
    lite0_model: Path, tmp_path: Path
) -> None:
    good = [str(FIXTURES / "pets" / "chelsea.jpg"), str(next((CATSDOGS / "test" / "dogs").iterdir()))]
    bad = [str(FIXTURES / "bad" / "truncated.jpg"), str(tmp_path / "missing.jpg")]
    result = catdog("predict", "--model", str(lite0_model), good[0], bad[0], good[1], bad[1])
    assert result.returncode == 2
    assert [line.split(": ")[0] for line in result.stdout.splitlines()] == good
    assert_error_lines(result, bad)


def test_predict_prints_exactly_one_line_per_unreadable_file(lite0_model: Path, tmp_path: Path) -> None:
    from .fixtures import make_odd_fixtures as odd

    cat = odd.photo()
    bad = {
        "tiff-bad-spp.tif": odd.tiff_with_bad_samples_per_pixel(cat),
        "png-108mp.png": odd.flat_png(12000, 9000),
        "bomb.png": odd.flat_png(30000, 30000, rows=1),
        "cut.jpg": odd.jpeg(cat)[:2000],
        "notes.html": b"<!doctype html><p>cat</p>",
        "cat.svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>',
        "cat.pdf": b"%PDF-1.4\n%%EOF\n",
        "empty.jpg": b"",
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    files = [str(tmp_path / name) for name in bad]
    result = catdog("predict", "--model", str(lite0_model), *files, str(FIXTURES / "pets" / "chelsea.jpg"), "--json")
    assert result.returncode == 2
    assert len(result.stdout.splitlines()) == 1
    assert_error_lines(result, files)


def test_predict_file_name_with_non_utf8_bytes(lite0_model: Path, tmp_path: Path) -> None:
    name = os.fsdecode(os.fsencode(tmp_path) + b"/chat-\xe9t\xe9.jpg")  # Latin-1 bytes, not UTF-8
    Path(name).write_bytes((FIXTURES / "pets" / "chelsea.jpg").read_bytes())
    shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    assert shown.endswith("chat-\\xe9t\\xe9.jpg")
    text = catdog("predict", "--model", str(lite0_model), name)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"{shown}: ")
    as_json = catdog("predict", "--model", str(lite0_model), name, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["path"] == shown


@pytest.mark.skipif(shutil.which("bash") is None, reason="process substitution needs bash")
def test_predict_reads_each_file_once_so_stdin_and_pipes_work(lite0_model: Path) -> None:
    photo = FIXTURES / "pets" / "chelsea.jpg"
    command = f'"{sys.executable}" -m catdog.cli predict --model "{lite0_model}" /dev/stdin <(cat "{photo}") --json'
    result = subprocess.run(["bash", "-c", command], input=photo.read_bytes(), capture_output=True, check=False)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["path"] == "/dev/stdin" and len(lines) == 2
    assert lines[0]["probability"] == lines[1]["probability"]


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
