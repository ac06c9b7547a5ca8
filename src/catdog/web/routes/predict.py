"""Predictions: one image (`file`) or many (`files`), judged by their bytes, never by name or type."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, Query, UploadFile

from catdog.errors import UsageProblem
from catdog.settings import Settings
from catdog.web.deps import ServiceDep, SettingsDep
from catdog.web.logs import request_id
from catdog.web.service import ModelService, UploadTooLarge

router = APIRouter(prefix="/api", tags=["predictions"])

ExplainQuery = Annotated[bool, Query(description="also return the Grad-CAM heat map as a PNG data URL")]


@router.post("/predict", summary="Classify one image")
async def predict(
    service: ServiceDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="the image (JPEG, PNG, WebP, HEIC, AVIF, TIFF, BMP, GIF)")],
    explain: ExplainQuery = False,
) -> dict[str, Any]:
    """P(dog), the class, the confidence and whether the picture shows a cat or a dog at all."""
    data = await _read(file, settings.max_upload_bytes)
    service.admit(1)
    try:
        return await service.predict(
            data, filename=file.filename, endpoint="predict", request_id=request_id.get(), explain=explain
        )
    finally:
        service.release(1)


@router.post("/predict/batch", summary="Classify several images")
async def predict_batch(
    service: ServiceDep,
    settings: SettingsDep,
    files: Annotated[list[UploadFile], File(description="the images, as a repeated field 'files'")],
    explain: ExplainQuery = False,
) -> dict[str, Any]:
    """One entry per file, in order; a bad file gets an error entry of its own and the others are predicted."""
    if len(files) > settings.max_batch_files:
        raise HTTPException(413, f"{len(files)} files; at most {settings.max_batch_files} per batch")
    service.admit(len(files))
    try:
        entries = await asyncio.gather(*(_one(service, settings, f, explain) for f in files))
    finally:
        service.release(len(files))
    failed = sum("error" in entry for entry in entries)
    return {"predictions": entries, "count": len(entries), "succeeded": len(entries) - failed, "failed": failed}


async def _one(service: ModelService, settings: Settings, file: UploadFile, explain: bool) -> dict[str, Any]:
    try:
        data = await _read(file, settings.max_upload_bytes)
        return await service.predict(
            data, filename=file.filename, endpoint="batch", request_id=request_id.get(), explain=explain
        )
    except UploadTooLarge as exc:
        return {"filename": file.filename, "error": str(exc), "status_code": 413}
    except UsageProblem as exc:
        return {"filename": file.filename, "error": str(exc), "status_code": 415}


async def _read(file: UploadFile, limit: int) -> bytes:
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise UploadTooLarge(f"the file is over the limit of {limit} bytes")
    return data
