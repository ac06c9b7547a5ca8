"""The model registry over HTTP: versions with metrics, aliases and lineage; promote; roll back."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from catdog.ml.artifacts import PLOTS_DIR
from catdog.registry import NothingToRollBack, UnknownVersion
from catdog.web.deps import AdminDep, RegistryDep, ServiceDep, SettingsDep

router = APIRouter(prefix="/api/models", tags=["model registry"])


@router.get("", summary="Registered model versions, newest first, with aliases and test metrics")
def list_models(registry: RegistryDep, service: ServiceDep, settings: SettingsDep) -> dict[str, Any]:
    aliases = registry.aliases()
    return {
        "registered_model": settings.registered_model,
        "production": aliases.get("production"),
        "staging": aliases.get("staging"),
        "versions": [version.to_dict() for version in registry.versions()],
        "served": service.served(),
    }


@router.post("/rollback", summary="Production back to the version it was before", dependencies=[AdminDep])
def rollback(registry: RegistryDep) -> dict[str, Any]:
    try:
        production, rolled_back_from = registry.rollback()
    except NothingToRollBack as exc:
        raise HTTPException(409, str(exc)) from None
    return {"production": production, "rolled_back_from": rolled_back_from}


@router.post("/{version}/promote", summary="Make a version production", dependencies=[AdminDep])
def promote(version: int, registry: RegistryDep) -> dict[str, Any]:
    try:
        production, previous = registry.promote(version, reason="promoted by hand (API)")
    except UnknownVersion as exc:
        raise HTTPException(404, str(exc)) from None
    return {"production": production, "previous": previous}


@router.get("/{version}/plots/{name}", summary="One plot of a version (PNG)")
def plot(version: int, name: str, registry: RegistryDep) -> FileResponse:
    try:
        folder = registry.local_model_dir(version) / PLOTS_DIR
    except UnknownVersion as exc:
        raise HTTPException(404, str(exc)) from None
    known = {p.name: p for p in folder.glob("*.png")} if folder.is_dir() else {}
    if name not in known:  # matched against the folder, never joined into a path
        raise HTTPException(404, f"version {version} has no plot {name!r}; known: {', '.join(sorted(known)) or 'none'}")
    return FileResponse(known[name], media_type="image/png")
