"""The tutorial notebook runs end to end through the library, here on the committed fixtures."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebook" / "cats_vs_dogs_classification.ipynb"
CATSDOGS = ROOT / "tests" / "fixtures" / "catsdogs"


def _ensure_python3_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Use the registered "python3" kernel, or install one for this interpreter into a temp prefix."""
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" in KernelSpecManager().find_kernel_specs():
        return
    from ipykernel.kernelspec import install

    prefix = tmp_path / "jupyter"
    install(prefix=str(prefix), kernel_name="python3")
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))


def _output_texts(cell: Any) -> list[str]:
    texts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            texts.append(output.get("text", ""))
        for mime in ("text/plain", "text/markdown"):
            texts.append(output.get("data", {}).get(mime, ""))
    return texts


def test_notebook_runs_on_fixtures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "model"
    monkeypatch.setenv("CATDOG_NOTEBOOK_DATA", str(CATSDOGS))
    monkeypatch.setenv("CATDOG_NOTEBOOK_EPOCHS", "3")
    monkeypatch.setenv("CATDOG_NOTEBOOK_BACKBONE", "efficientnet_lite0")
    monkeypatch.setenv("CATDOG_NOTEBOOK_VIEWS", "1")
    monkeypatch.setenv("CATDOG_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("CATDOG_FEATURES_DIR", str(tmp_path / "features"))
    _ensure_python3_kernel(tmp_path, monkeypatch)

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        coalesce_streams=True,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert (out / "metrics.json").is_file()
    assert (out / "model.onnx").is_file()
    assert (out / "model_config.json").is_file()
    for plot in ("confusion_matrix.png", "roc_curve.png", "worst_mistakes.png", "training_curves.png"):
        assert (out / "plots" / plot).is_file(), plot
    texts = "\n".join(t for cell in notebook.cells if cell.cell_type == "code" for t in _output_texts(cell))
    assert re.search(r"test accuracy: [01]\.\d{4} on 12 images", texts)
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 6  # charts, sample grid, views, curves, confusion matrix, ROC, mistakes, predictions
