"""The drift check's child process: it imports the ML core only (no web layer, no metrics)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from catdog.lifecycle import exit_with_parent
from catdog.ml.drift import DriftReference, DriftReport, compute_drift

_reference: DriftReference | None = None


def start_child(model_dir: str, parent_pid: int | None = None) -> None:
    """Process initializer: one BLAS thread at a lower CPU priority than the server, the reference loaded once.

    The server's model runs keep both cores; a check then takes a little longer (about a
    second of one core at window 500) instead of taking cores from the batch thread.
    parent_pid: the server process that started it; the child ends with it, even when the
    server is killed (catdog.lifecycle), instead of waiting for work that never comes.
    """
    global _reference
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the server stops this child
    if parent_pid is not None:
        exit_with_parent(parent_pid, what="drift check process")
    with contextlib.suppress(AttributeError, OSError):
        os.nice(19)
    threadpool_limits(1)
    _reference = DriftReference.load(Path(model_dir))


def compute_in_child(
    recent_p: np.ndarray, recent_features: np.ndarray, precision: str, min_samples: int
) -> DriftReport:
    """compute_drift against the reference loaded by start_child."""
    if _reference is None:
        raise RuntimeError("start_child did not run in this process")
    return compute_drift(_reference, recent_p, recent_features, precision, min_samples=min_samples)
