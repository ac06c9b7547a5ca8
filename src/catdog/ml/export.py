"""Build model.onnx: the backbone graph and the head in one ONNX graph, output P(dog).

The head graph is written directly from head.npz with onnx.helper, so rebuilding a shipped
model needs only the backbone weights and the committed head, never training code.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from catdog.ml.artifacts import CALIBRATION_JSON, HEAD_NPZ, LAST_BLOCK_NPZ, MODEL_ONNX, PET_GATE_ONNX, ModelConfig
from catdog.ml.backbones import create_backbone
from catdog.ml.backbones.base import ONNX_OPSET, Backbone, PooledFeatures, ensure_onnx, export_onnx
from catdog.ml.backbones.efficientnet_lite0 import EfficientNetLite0


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
    backbone = onnx.load(str(backbone_path))
    head = compose.add_prefix(head, "head/")
    head.ir_version = backbone.ir_version
    _align_opsets(backbone, head)
    merged = compose.merge_models(backbone, head, io_map=[("features", "head/features")])
    _rename_output(merged, "head/p_dog", "p_dog")
    onnx.checker.check_model(merged)
    return merged


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


def build_model_dir(model_dir: Path, weights_dir: Path | None = None) -> Path:
    """(Re)build model.onnx and pet_gate.onnx from the backbone weights and the committed head."""
    model_dir = Path(model_dir)
    config = ModelConfig.load(model_dir)
    backbone = create_backbone(config.backbone, weights_dir=weights_dir)
    table = model_dir / CALIBRATION_JSON if config.precision == "int8" else None
    if (model_dir / LAST_BLOCK_NPZ).is_file():
        backbone_graph = finetuned_backbone_graph(backbone, model_dir)
    else:
        backbone_graph = ensure_onnx(backbone, config.precision, table)
    with np.load(model_dir / HEAD_NPZ) as npz:
        arrays = {key: npz[key] for key in npz.files}
    save_atomic(combine(backbone_graph, head_graph(arrays, config.head)), model_dir / MODEL_ONNX)
    gate = EfficientNetLite0(weights_dir=weights_dir)
    gate.prepare()
    part = model_dir / (PET_GATE_ONNX + ".part")
    shutil.copyfile(gate.pet_gate_path, part)
    part.replace(model_dir / PET_GATE_ONNX)
    return model_dir / MODEL_ONNX
