from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from catdog.ml.artifacts import ModelDirError
from catdog.ml.predictor import Predictor
from catdog.ml.preprocessing import ImageDecodeError

from ..conftest import CATSDOGS, FIXTURES


def test_predictions_have_the_documented_fields(lite0_model: Path) -> None:
    path = next((CATSDOGS / "test" / "cats").iterdir())
    (prediction,) = Predictor(lite0_model).predict([path])
    record = prediction.to_dict()
    assert set(record) == {"path", "predicted_class", "confidence", "probability", "is_pet", "pet_score"}
    assert record["predicted_class"] in {"cat", "dog"}
    assert 0.5 <= record["confidence"] <= 1.0
    expected = record["probability"] if record["predicted_class"] == "dog" else 1 - record["probability"]
    assert record["confidence"] == pytest.approx(expected, abs=1e-6)


def test_bytes_and_files_give_the_same_answer(lite0_model: Path) -> None:
    path = FIXTURES / "pets" / "chelsea.jpg"
    predictor = Predictor(lite0_model)
    from_file, from_bytes = predictor.predict([path, path.read_bytes()])
    assert from_file.probability == from_bytes.probability
    assert from_bytes.path is None


def test_batches_give_the_same_answers_as_single_images(lite0_model: Path) -> None:
    paths = sorted((CATSDOGS / "test" / "dogs").iterdir())
    batched = Predictor(lite0_model, batch_size=16).probabilities(paths)
    single = [Predictor(lite0_model, batch_size=1).probabilities([p])[0] for p in paths[:3]]
    np.testing.assert_allclose(batched[:3], single, atol=1e-5)


def test_the_pet_gate_flags_objects(lite0_model: Path) -> None:
    predictor = Predictor(lite0_model)
    cat, coffee, rocket = predictor.predict(
        [FIXTURES / "pets" / "chelsea.jpg", FIXTURES / "nonpet" / "coffee.jpg", FIXTURES / "nonpet" / "rocket.jpg"]
    )
    assert cat.is_pet is True
    assert coffee.is_pet is False and rocket.is_pet is False


def test_unreadable_input_raises(lite0_model: Path) -> None:
    with pytest.raises(ImageDecodeError):
        Predictor(lite0_model).predict([b"not an image"])


def test_a_folder_without_model_onnx_says_how_to_build_it(model_copy: Path) -> None:
    (model_copy / "model.onnx").unlink()
    with pytest.raises(ModelDirError, match="catdog build"):
        Predictor(model_copy)


def test_a_folder_that_is_no_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError):
        Predictor(tmp_path)
