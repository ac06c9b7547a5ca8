"""The model registry over HTTP: versions with metrics, aliases, lineage and gate checks; promote; roll back;
move the promotion gate's reference."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from catdog.ml.artifacts import PLOTS_DIR
from catdog.registry import ReferenceNotBetter
from catdog.web.deps import AdminDep, RegistryDep, ServiceDep, SettingsDep, VersionPath
from catdog.web.openapi import error_responses
from catdog.web.schemas import ModelsAnswer, PromoteAnswer, ReferenceAnswer, RollbackAnswer

router = APIRouter(prefix="/api/models", tags=["model registry"])


@router.get(
    "",
    summary="Registered model versions, newest first, with aliases and test metrics",
    response_model=ModelsAnswer,
    response_model_exclude_unset=True,  # a gate check stored without `skipped` or `detail` stays so
)
def list_models(registry: RegistryDep, service: ServiceDep, settings: SettingsDep) -> dict[str, Any]:
    """`served` and the load errors are this server process's view (each worker process loads on its own).

    `swap_error`: why an alias does not serve the version it names here ({"alias", "version",
    "reason", "at", "retry_in_seconds"}, production's first; None when all serve); each
    version's `load_error`: the same for that version, or None.
    """
    aliases = registry.aliases()
    failures = service.swap_failures()
    load_errors = {failure["version"]: failure for failure in failures if failure["version"] is not None}
    return {
        "registered_model": settings.registered_model,
        "production": aliases.get("production"),
        "staging": aliases.get("staging"),
        "versions": [
            version.to_dict() | {"load_error": load_errors.get(version.version)} for version in registry.versions()
        ],
        "reference": registry.reference().to_dict(),  # the promotion gate's reference version
        "served": service.served(),
        "swap_error": failures[0] if failures else None,
        "swap_errors": failures,
    }


@router.post(
    "/rollback",
    summary="Production back to the version it was before",
    dependencies=[AdminDep],
    response_model=RollbackAnswer,
    responses=error_responses(401, 403, 409, 413, e409="there is no earlier production version"),
)
def rollback(registry: RegistryDep, service: ServiceDep) -> dict[str, Any]:
    """Versions that failed to load on this server are passed over (they would leave the version
    rolled back from serving); `skipped` names them."""
    skip = dict(service.unloadable)
    production, rolled_back_from = registry.rollback(skip=skip)  # NothingToRollBack: 409
    skipped = [{"version": version, "reason": reason} for version, reason in sorted(skip.items())]
    return {"production": production, "rolled_back_from": rolled_back_from, "skipped": skipped}


@router.post(
    "/{version}/promote",
    summary="Make a version production",
    dependencies=[AdminDep],
    response_model=PromoteAnswer,
    responses=error_responses(401, 403, 404, 413, e404="no such version"),
)
def promote(version: VersionPath, registry: RegistryDep) -> dict[str, Any]:
    production, previous = registry.promote(version, reason="promoted by hand (API)")  # UnknownVersion: 404
    return {"production": production, "previous": previous}


@router.post(
    "/{version}/reference",
    summary="Make a version the promotion gate's reference (only to one at least as accurate)",
    dependencies=[AdminDep],
    response_model=ReferenceAnswer,
    responses=error_responses(
        401, 403, 404, 409, 413, e409="its test accuracy is below the current reference's, or another backbone"
    ),
)
def set_reference(version: VersionPath, registry: RegistryDep, settings: SettingsDep) -> dict[str, Any]:
    """Stores the reference in the registry; overridden_by_setting: CATDOG_GATE_REFERENCE (it wins) or null.

    404: no such version; 409: its test accuracy is below the current reference's (or missing).
    """
    try:
        reference, previous = registry.set_reference(version, set_by="admin (API)")  # UnknownVersion: 404
    except ReferenceNotBetter as exc:  # 409, naming the setting that pins the reference here
        pinned = settings.gate_reference
        if pinned:
            note = f"CATDOG_GATE_REFERENCE={pinned} pins the reference on this server and wins"
            raise ReferenceNotBetter(f"{exc} ({note})") from None
        raise
    return {"reference": reference, "previous": previous, "overridden_by_setting": settings.gate_reference}


@router.get(
    "/{version}/plots/{name}",
    summary="One plot of a version (PNG)",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, **error_responses(404, e404="no such version, or no such plot")},
)
def plot(version: VersionPath, name: str, registry: RegistryDep) -> FileResponse:
    folder = registry.local_model_dir(version) / PLOTS_DIR  # UnknownVersion: 404
    known = {p.name: p for p in folder.glob("*.png")} if folder.is_dir() else {}
    if name not in known:  # matched against the folder, never joined into a path
        raise HTTPException(404, f"version {version} has no plot {name!r}; known: {', '.join(sorted(known)) or 'none'}")
    return FileResponse(known[name], media_type="image/png")
