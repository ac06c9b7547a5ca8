"""catdog's model registry on MLflow: training runs, registered model versions, aliases, promote and rollback.

Importing this package turns MLflow's telemetry off (MLFLOW_DISABLE_TELEMETRY, unless the
environment says otherwise) before MLflow is imported, and again afterwards in case something
imported MLflow first: nothing here reaches the network unless a tracking URI points there.
"""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow.telemetry

mlflow.telemetry.set_telemetry_client()  # re-reads the variable: None while telemetry is disabled

from catdog.registry.mlflow_registry import Registry  # noqa: E402
from catdog.registry.reference import GateReference, ReferenceNotBetter  # noqa: E402
from catdog.registry.types import (  # noqa: E402
    ALIASES,
    METRIC_KEYS,
    PRODUCTION,
    STAGING,
    ModelVersionInfo,
    NothingToRollBack,
    RegistryError,
    UnknownVersion,
    training_dataset,
)

__all__ = [
    "ALIASES",
    "METRIC_KEYS",
    "PRODUCTION",
    "STAGING",
    "GateReference",
    "ModelVersionInfo",
    "NothingToRollBack",
    "ReferenceNotBetter",
    "Registry",
    "RegistryError",
    "UnknownVersion",
    "training_dataset",
]
