from __future__ import annotations

import logging
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest

from catdog.ml import precision
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


# --- precision -----------------------------------------------------------------------------------
VNNI = frozenset({"avx2", "avx512f", "avx512_vnni"})
AVX2 = frozenset({"avx2", "fma"})


def fake_int8_graph(model_dir: Path) -> Path:
    """A stand-in model_int8.onnx (the fp32 graph under the int8 name): enough to test the choice."""
    return Path(shutil.copyfile(model_dir / "model.onnx", model_dir / "model_int8.onnx"))


def test_auto_without_an_int8_graph_runs_fp32_quietly(model_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_flags", lambda: VNNI)
    assert Predictor(model_copy).precision == "fp32"


@pytest.mark.parametrize(
    ("flags", "speedup", "expected"), [(VNNI, 0.5, "int8"), (AVX2, 2.5, "int8"), (AVX2, 1.0, "fp32")]
)
def test_auto_picks_int8_where_the_cpu_has_int8_dot_products_or_runs_it_faster(
    model_copy: Path, monkeypatch: pytest.MonkeyPatch, flags: frozenset[str], speedup: float, expected: str
) -> None:
    import catdog.ml.predictor as predictor_module

    fake_int8_graph(model_copy)
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    timed: list[str] = []
    monkeypatch.setattr(predictor_module, "measured_int8_speedup", lambda key, *a, **k: timed.append(key) or speedup)
    predictor = Predictor(model_copy)
    assert predictor.precision == expected
    assert timed == ([] if flags == VNNI else ["efficientnet_lite0"])  # VNNI needs no timing
    assert predictor.model_path.name == {"int8": "model_int8.onnx", "fp32": "model.onnx"}[expected]


def test_an_explicit_precision_wins_over_the_cpu(model_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_int8_graph(model_copy)
    monkeypatch.setattr(precision, "cpu_flags", lambda: AVX2)
    assert Predictor(model_copy, precision="int8").precision == "int8"
    monkeypatch.setattr(precision, "cpu_flags", lambda: VNNI)
    assert Predictor(model_copy, precision="fp32").precision == "fp32"


def test_int8_without_an_int8_graph_says_how_to_build_it(model_copy: Path) -> None:
    with pytest.raises(ModelDirError, match=r"model_int8\.onnx is missing.*catdog build"):
        Predictor(model_copy, precision="int8")
    with pytest.raises(ModelDirError, match="unknown precision"):
        Predictor(model_copy, precision="fp16")


def test_the_precision_that_runs_is_logged_once(lite0_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="catdog.ml.predictor"):
        predictor = Predictor(lite0_model, precision="fp32")
        predictor.predict([FIXTURES / "pets" / "chelsea.jpg"])
    lines = [r.getMessage() for r in caplog.records if r.name == "catdog.ml.predictor"]
    assert len(lines) == 1 and "fp32 graph model.onnx" in lines[0] and predictor.version in lines[0]


# --- version ---------------------------------------------------------------------------------------
def test_version_names_the_trained_weights(model_copy: Path) -> None:
    version = Predictor(model_copy).version
    assert re.fullmatch(r"efficientnet_lite0-[0-9a-f]{8}", version)
    assert Predictor(model_copy, batch_size=1).version == version  # stable
    fake_int8_graph(model_copy)
    assert Predictor(model_copy, precision="int8").version == version  # the weights, not the graph
    with np.load(model_copy / "head.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["linear0.bias"] = arrays["linear0.bias"] + 0.01
    np.savez(model_copy / "head.npz", **arrays)
    assert Predictor(model_copy).version != version


# --- the batcher's API: decode, infer, prediction ------------------------------------------------
def test_infer_gives_every_output_with_the_documented_shapes(lite0_model: Path) -> None:
    predictor = Predictor(lite0_model)
    decoded = [predictor.decode(p) for p in [FIXTURES / "pets" / "chelsea.jpg", FIXTURES / "nonpet" / "coffee.jpg"]]
    assert all(gate is None for _, gate in decoded)  # the feature gate needs no images of its own
    images = np.stack([image for image, _ in decoded])
    assert images.shape == (2, 224, 224, 3) and images.dtype == np.uint8
    out = predictor.infer(images, feature_map=True)
    assert out.p_dog.shape == (2,) and out.p_dog.dtype == np.float64
    assert out.features.shape == (2, 1280) and out.features.dtype == np.float32
    assert out.feature_map is not None
    assert out.feature_map.shape == (2, 1280, 7, 7) and out.feature_map.dtype == np.float32
    assert out.pet_score is not None and out.pet_score.shape == (2,) and out.pet_score.dtype == np.float64
    np.testing.assert_allclose(out.features, out.feature_map.mean(axis=(2, 3)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.p_dog, predictor.p_dog(images), atol=1e-6)
    plain = predictor.infer(images)  # the serving path: no feature map unless an explanation is asked for
    assert plain.feature_map is None
    np.testing.assert_allclose(plain.pet_score, out.pet_score)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="feature map"):
        predictor.cams(plain)
    assert predictor.cams(out).shape == (2, 7, 7)
    cat = predictor.prediction("chelsea.jpg", float(out.p_dog[0]), float(out.pet_score[0]))
    (expected,) = predictor.predict([FIXTURES / "pets" / "chelsea.jpg"], names=["chelsea.jpg"])
    assert cat == expected


def test_infer_refuses_images_of_the_wrong_size(lite0_model: Path) -> None:
    with pytest.raises(ValueError, match="224"):
        Predictor(lite0_model).infer(np.zeros((1, 100, 100, 3), np.uint8))


def test_decode_in_many_threads_while_one_thread_infers(lite0_model: Path) -> None:
    """The web service's pattern: decoding in a pool, one batching thread; answers as if alone."""
    predictor = Predictor(lite0_model)
    paths = sorted((CATSDOGS / "test" / "cats").iterdir()) + sorted((CATSDOGS / "test" / "dogs").iterdir())
    alone = predictor.p_dog(np.stack([predictor.decode(p)[0] for p in paths]))
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(predictor.decode, p.read_bytes()) for p in paths]
        together = [predictor.infer(future.result()[0][None]).p_dog[0] for future in futures]
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_explain_gives_the_prediction_and_a_map(lite0_model: Path) -> None:
    predictor = Predictor(lite0_model)
    image, gate = predictor.decode(FIXTURES / "pets" / "chelsea.jpg")
    prediction, cam = predictor.explain(image, gate, name="chelsea")
    (expected,) = predictor.predict([FIXTURES / "pets" / "chelsea.jpg"], names=["chelsea"])
    assert prediction == expected
    assert cam.shape == (7, 7) and cam.dtype == np.float32 and cam.max() == pytest.approx(1.0)


def test_a_graph_built_before_the_extra_outputs_still_predicts(model_copy: Path) -> None:
    """Old model.onnx (p_dog only): predict and evaluation work; infer asks for a rebuild."""
    model = onnx.load(str(model_copy / "model.onnx"))
    keep = [output for output in model.graph.output if output.name == "p_dog"]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    onnx.save(model, str(model_copy / "model.onnx"))
    predictor = Predictor(model_copy)
    assert not predictor.can_explain
    (prediction,) = predictor.predict([FIXTURES / "pets" / "chelsea.jpg"])
    assert prediction.predicted_class in {"cat", "dog"}
    image, _ = predictor.decode(FIXTURES / "pets" / "chelsea.jpg")
    with pytest.raises(ModelDirError, match="rebuild it with `catdog build"):
        predictor.infer(image[None])


def test_without_head_npz_predictions_work_and_grad_cam_says_what_is_missing(model_copy: Path) -> None:
    (model_copy / "head.npz").unlink()
    predictor = Predictor(model_copy)
    (prediction,) = predictor.predict([FIXTURES / "pets" / "chelsea.jpg"])
    assert prediction.predicted_class == "cat"
    image, gate = predictor.decode(FIXTURES / "pets" / "chelsea.jpg")
    with pytest.raises(ModelDirError, match=r"head\.npz is missing"):
        predictor.explain(image, gate)
