"""Predictions: one image (`file`) or many (`files`), judged by their bytes, never by name or type."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError

from catdog.errors import CatdogError
from catdog.settings import Settings
from catdog.web.deps import ServiceDep, SettingsDep
from catdog.web.logs import request_id
from catdog.web.openapi import error_responses
from catdog.web.problems import UploadTooLarge
from catdog.web.schemas import BatchAnswer, PredictionAnswer
from catdog.web.service import ModelService

router = APIRouter(prefix="/api", tags=["predictions"])

T = TypeVar("T")
CLIENT_CLOSED = 499  # nginx's code for "the client closed the request": logged, never seen by the client

ExplainQuery = Annotated[bool, Query(description="also return the Grad-CAM heat map as a PNG data URL")]


@router.post(
    "/predict",
    summary="Classify one image",
    response_model=PredictionAnswer,
    response_model_exclude_unset=True,  # `explanation` only when asked for; null fields stay null
    responses=error_responses(
        413,
        415,
        503,
        e413="the image is over CATDOG_MAX_UPLOAD_BYTES",
        e503="overloaded (the queue is full) or the model is not ready",
    ),
)
async def predict(
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="the image (JPEG, PNG, WebP, HEIC, AVIF, TIFF, BMP, GIF)")],
    explain: ExplainQuery = False,
) -> dict[str, Any]:
    """P(dog), the class, the confidence and whether the picture shows a cat or a dog at all.

    422 for more than one file in `file` (FastAPI would silently keep one): several go to /api/predict/batch.
    """
    sent = len((await request.form()).getlist("file"))  # the form FastAPI parsed (cached on the request)
    if sent > 1:
        raise RequestValidationError(
            [
                {
                    "type": "too_many_files",
                    "loc": ("body", "file"),
                    "msg": f"{sent} files sent in 'file', which takes one: send several to POST /api/predict/batch "
                    "as a repeated field 'files'",
                }
            ]
        )
    data = await _read(file, settings.max_upload_bytes)
    service.admit(1)
    try:
        work = service.predict(
            data, filename=file.filename, endpoint="predict", request_id=request_id.get(), explain=explain
        )
        return await unless_client_leaves(request, work)
    finally:
        service.release(1)


@router.post(
    "/predict/batch",
    summary="Classify several images",
    response_model=BatchAnswer,
    response_model_exclude_unset=True,
    responses=error_responses(
        413,
        503,
        e413="more files than CATDOG_MAX_BATCH_FILES, or the request is over the size limit",
        e503="overloaded (the queue cannot take this many images) or the model is not ready",
    ),
)
async def predict_batch(
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    files: Annotated[list[UploadFile], File(description="the images, as a repeated field 'files'")],
    explain: ExplainQuery = False,
) -> dict[str, Any]:
    """One entry per file, in order; a bad file gets an error entry of its own and the others are predicted."""
    if len(files) > settings.max_batch_files:
        raise UploadTooLarge(f"{len(files)} files; at most {settings.max_batch_files} per batch")
    service.admit(len(files))
    try:
        entries = await unless_client_leaves(
            request, asyncio.gather(*(_one(service, settings, f, explain) for f in files))
        )
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
    except CatdogError as exc:  # a file's own 4xx (413 too large, 415 no image) is its entry; the rest fail all
        if not 400 <= exc.status_code < 500:
            raise
        return {"filename": file.filename, "error": str(exc), "status_code": exc.status_code}


async def _read(file: UploadFile, limit: int) -> bytes:
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise UploadTooLarge(f"the file is over the limit of {limit / 2**20:g} MiB (CATDOG_MAX_UPLOAD_BYTES)")
    return data


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first (HTTP 499 in the log).

    Starlette lets a handler run on after its client has gone; cancelling here means an image
    still in the batcher's queue is dropped before it runs, so abandoned requests cost nothing.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)  # let it unwind (release its queue slot) first
    raise HTTPException(CLIENT_CLOSED, "the client closed the request")


async def _disconnected(request: Request) -> None:
    """Return once the client has gone (the body is read by then, so only a disconnect can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
