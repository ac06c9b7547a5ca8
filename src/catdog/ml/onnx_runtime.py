"""ONNX Runtime sessions, made one way everywhere (serving, evaluation, feature extraction)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def make_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    """A CPU session (CUDA first when this onnxruntime build and the machine have it)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)
