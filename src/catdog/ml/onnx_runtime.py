"""ONNX Runtime sessions, made one way everywhere (serving, evaluation, feature extraction)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def make_session(path: Path, threads: int = 0, spin: bool = True) -> ort.InferenceSession:
    """A CPU session (CUDA first when this onnxruntime build and the machine have it).

    spin=False: idle intra-op threads sleep at once instead of spinning (background work that must
    leave the cores to others; ONNX Runtime's `session.intra_op.allow_spinning`).
    """
    options = ort.SessionOptions()
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)
