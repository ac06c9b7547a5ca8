"""Build the served graphs: the backbone and the head in one ONNX graph per precision.

model.onnx (fp32) and, where a calibration table applies, model_int8.onnx: image (N,3,S,S) ->
p_dog (N,), features (N,C) (the pooled backbone output the head reads) and feature_map
(N,C,h,w) (the map the backbone pools, for Grad-CAM). The head graph is written directly from
head.npz with onnx.helper, so rebuilding a shipped model needs only the backbone weights and the
committed head, never training code.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from catdog.ml.artifacts import (
    CALIBRATION_JSON,
    FEATURE_MAP,
    FEATURES,
    HEAD_NPZ,
    LAST_BLOCK_NPZ,
    MODEL_GRAPHS,
    MODEL_ONNX,
    P_DOG,
    PET_GATE_ONNX,
    ModelConfig,
)
from catdog.ml.backbones import create_backbone
from catdog.ml.backbones.base import (
    ONNX_OPSET,
    Backbone,
    PooledFeatures,
    ensure_onnx,
    export_onnx,
    packaged_calibration_table,
)
from catdog.ml.backbones.efficientnet_lite0 import EfficientNetLite0

log = logging.getLogger(__name__)


def head_graph(arrays: dict[str, np.ndarray], config: dict[str, Any] | None = None) -> onnx.ModelProto:
    """features (N, C) -> [L2 normalize x scale] -> Gemm/ReLU ... Gemm -> sigmoid -> p_dog (N,)."""
    n_layers = len([k for k in arrays if k.endswith(".weight")])
    in_features = arrays["linear0.weight"].shape[1]
    nodes, inits, current = [], [], "features"
    if config and config.get("l2_normalize"):
        inits.append(numpy_helper.from_array(np.array(config["l2_scale"], np.float32), "l2_scale"))
        nodes += [
            helper.make_node("LpNormalization", [current], ["unit"], axis=1, p=2),
            helper.make_node("Mul", ["unit", "l2_scale"], ["normalized"]),
        ]
        current = "normalized"
    for i in range(n_layers):
        weight, bias = f"linear{i}.weight", f"linear{i}.bias"
        inits += [numpy_helper.from_array(arrays[weight], weight), numpy_helper.from_array(arrays[bias], bias)]
        nodes.append(helper.make_node("Gemm", [current, weight, bias], [f"gemm{i}"], transB=1))
        current = f"gemm{i}"
        if i < n_layers - 1:
            nodes.append(helper.make_node("Relu", [current], [f"relu{i}"]))
            current = f"relu{i}"
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "squeeze_axes"))
    nodes += [
        helper.make_node("Squeeze", [current, "squeeze_axes"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["p_dog"]),
    ]
    graph = helper.make_graph(
        nodes,
        "catdog_head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", in_features])],
        [helper.make_tensor_value_info("p_dog", TensorProto.FLOAT, ["batch"])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    onnx.checker.check_model(model)
    return model


def combine(backbone_path: Path, head: onnx.ModelProto) -> onnx.ModelProto:
    """One graph: image -> p_dog (N,), features (N, C), feature_map (N, C, h, w).

    backbone_path: a feature graph (fp32 or QDQ int8) whose output "features" is a ReduceMean
    over the spatial axes of a feature map; that map becomes the output "feature_map".
    Raises ValueError when the backbone's features do not come from such a node.
    """
    backbone = onnx.load(str(backbone_path))
    _expose_feature_map(backbone, channels=_head_inputs(head))
    head = compose.add_prefix(head, "head/")
    head.ir_version = backbone.ir_version
    _align_opsets(backbone, head)
    merged = compose.merge_models(
        backbone, head, io_map=[(FEATURES, "head/features")], outputs=["head/p_dog", FEATURES, FEATURE_MAP]
    )
    _rename_output(merged, "head/p_dog", P_DOG)
    order = [P_DOG, FEATURES, FEATURE_MAP]  # p_dog first: callers that take output 0 keep working
    outputs = sorted(merged.graph.output, key=lambda value: order.index(value.name))
    del merged.graph.output[:]
    merged.graph.output.extend(outputs)
    onnx.checker.check_model(merged)
    return merged


def _head_inputs(head: onnx.ModelProto) -> int:
    return int(head.graph.input[0].type.tensor_type.shape.dim[1].dim_value)


def _expose_feature_map(backbone: onnx.ModelProto, channels: int) -> None:
    """Rename the pooling node's input to "feature_map" and make it a graph output too."""
    graph = backbone.graph
    pool = next((node for node in graph.node if FEATURES in node.output), None)
    if pool is None or pool.op_type != "ReduceMean":
        found = "nothing" if pool is None else pool.op_type
        raise ValueError(f"the backbone's {FEATURES!r} must come from a ReduceMean over the feature map, not {found}")
    old = pool.input[0]
    if any(value.name == old for value in graph.input):
        raise ValueError("the backbone pools its input directly: there is no feature map to expose")
    for node in graph.node:
        node.input[:] = [FEATURE_MAP if name == old else name for name in node.input]
        node.output[:] = [FEATURE_MAP if name == old else name for name in node.output]
    for value in list(graph.value_info) + list(graph.output):
        if value.name == old:
            value.name = FEATURE_MAP
    shape: list[str | int] = ["batch", channels, "map_height", "map_width"]
    graph.output.append(helper.make_tensor_value_info(FEATURE_MAP, TensorProto.FLOAT, shape))


def _align_opsets(first: onnx.ModelProto, second: onnx.ModelProto) -> None:
    versions = {op.domain: op.version for op in first.opset_import}
    for op in second.opset_import:
        if op.domain in versions:
            op.version = versions[op.domain]


def _rename_output(model: onnx.ModelProto, old: str, new: str) -> None:
    for node in model.graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
    for output in model.graph.output:
        if output.name == old:
            output.name = new


def save_atomic(model: onnx.ModelProto, path: Path) -> None:
    part = path.with_suffix(".part")
    onnx.save(model, str(part))
    part.replace(path)


def finetuned_backbone_graph(backbone: Backbone, model_dir: Path) -> Path:
    """The pretrained body with the model's own fine-tuned last block, as the pooled-feature graph."""
    import torch

    body = backbone.build_body()
    body.load_state_dict(backbone.load_state())
    last_block = backbone.finetune_split(body)[1]  # shares its modules with body
    with np.load(model_dir / LAST_BLOCK_NPZ) as arrays:
        last_block.load_state_dict({key: torch.from_numpy(arrays[key]) for key in arrays.files})
    path = model_dir / "features.onnx"
    export_onnx(PooledFeatures(body).eval(), path, backbone.spec)
    return path


@dataclass(frozen=True)
class BuiltGraph:
    precision: str  # "fp32" or "int8"
    path: Path
    seconds: float  # backbone graph (quantized once per table, then cached) + merge + write


def calibration_table(model_dir: Path, backbone_name: str) -> Path | None:
    """The int8 range table for a model: the directory's own calibration.json, else the packaged one."""
    for table in (Path(model_dir) / CALIBRATION_JSON, packaged_calibration_table(backbone_name)):
        if table.is_file():
            return table
    return None


def build_graphs(model_dir: Path, weights_dir: Path) -> list[BuiltGraph]:
    """(Re)build model.onnx, model_int8.onnx (where a calibration table applies) and pet_gate.onnx.

    A model with a fine-tuned last block gets fp32 only: the tables were measured on the
    pretrained block. The old model_int8.onnx is removed first, so a failed or inapplicable
    int8 build never leaves an int8 graph with an older head next to a new model.onnx.
    weights_dir: the backbones' weights folder (settings.weights_dir), where the backbone graphs
    are read from (converted into it the first time).
    """
    model_dir = Path(model_dir)
    config = ModelConfig.load(model_dir)
    backbone = create_backbone(config.backbone, weights_dir=weights_dir)
    with np.load(model_dir / HEAD_NPZ) as npz:
        head = head_graph({key: npz[key] for key in npz.files}, config.head)
    (model_dir / MODEL_GRAPHS["int8"]).unlink(missing_ok=True)
    finetuned = (model_dir / LAST_BLOCK_NPZ).is_file()
    table = None if finetuned else calibration_table(model_dir, backbone.spec.name)
    built = []
    for precision in ("fp32", "int8") if table is not None else ("fp32",):
        started = time.perf_counter()
        if finetuned:
            graph = finetuned_backbone_graph(backbone, model_dir)
        else:
            with _quiet_quantizer_advice():
                graph = ensure_onnx(backbone, precision, table if precision == "int8" else None)
        path = model_dir / MODEL_GRAPHS[precision]
        save_atomic(combine(graph, head), path)
        built.append(BuiltGraph(precision, path, time.perf_counter() - started))
        log.info("built %s (%s) in %.1f s", path, precision, built[-1].seconds)
    _copy_pet_gate(model_dir, weights_dir)
    return built


class _DropPreprocessingAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_quantizer_advice() -> Iterator[None]:
    """onnxruntime's quantizer logs advice to run its shape pre-processing on the root logger at
    WARNING, on every build; the graphs here are exported with shapes, so it is noise."""
    advice = _DropPreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(advice)


def _copy_pet_gate(model_dir: Path, weights_dir: Path) -> None:
    gate = EfficientNetLite0(weights_dir=weights_dir)
    gate.prepare()
    part = model_dir / (PET_GATE_ONNX + ".part")
    shutil.copyfile(gate.pet_gate_path, part)
    part.replace(model_dir / PET_GATE_ONNX)


def build_model_dir(model_dir: Path, weights_dir: Path) -> Path:
    """(Re)build every graph of a model directory (see build_graphs); returns model.onnx's path."""
    build_graphs(model_dir, weights_dir)
    return Path(model_dir) / MODEL_ONNX
