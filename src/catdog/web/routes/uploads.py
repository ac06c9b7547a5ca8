"""Training uploads (the spec's retrain page): add per class, list, view, delete."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, Response

from catdog.db import jobs
from catdog.db.models import UploadSource
from catdog.errors import UsageProblem
from catdog.uploads import (
    BROWSER_SUFFIXES,
    UnknownClass,
    check_class,
    list_uploads,
    png_bytes,
    upload_counts,
    upload_dict,
)
from catdog.web.deps import AdminDep, SessionDep, SettingsDep, UploadsDep
from catdog.web.service import UploadTooLarge

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["training data"])

ClassQuery = Annotated[str, Query(description="cats or dogs")]


@router.post(
    "/upload-training-data", summary="Add images of one class to the training uploads", dependencies=[AdminDep]
)
async def upload_training_data(
    class_name: ClassQuery,
    store: UploadsDep,
    settings: SettingsDep,
    session: SessionDep,
    files: Annotated[list[UploadFile], File(description="the images, as a repeated field 'files'")],
) -> dict[str, Any]:
    """Each file is decoded like a prediction upload, stored once by content (sha256), and recorded.

    Duplicates of earlier uploads or of the base training set are reported and not stored again.
    """
    try:
        check_class(class_name)
    except UnknownClass as exc:
        raise HTTPException(400, str(exc)) from None
    if len(files) > settings.max_upload_files:
        raise HTTPException(413, f"{len(files)} files; at most {settings.max_upload_files} per upload")
    stored, errors = [], []
    loop = asyncio.get_running_loop()
    for file in files:
        try:
            data = await file.read(settings.max_upload_bytes + 1)
            if len(data) > settings.max_upload_bytes:
                raise UploadTooLarge(f"over the limit of {settings.max_upload_bytes / 2**20:g} MiB")
            entry = await loop.run_in_executor(
                None, store.add, session, data, class_name, file.filename, UploadSource.UPLOAD
            )
            stored.append(entry.to_dict())
        except (UsageProblem, UploadTooLarge) as exc:
            errors.append({"filename": file.filename, "error": str(exc)})
        except Exception:  # one file must never cost the others their answer
            log.exception("could not store upload %r", file.filename)
            errors.append({"filename": file.filename, "error": "could not store this file; the server log has why"})
    duplicates = [entry for entry in stored if entry["status"] == "duplicate"]
    return {
        "uploaded": len(stored) - len(duplicates),
        "class": class_name,
        "files": stored,
        "duplicates": duplicates,
        "errors": errors,
        "totals": upload_counts(session),
    }


@router.get("/uploads", summary="The training uploads, newest first")
def uploads(
    session: SessionDep,
    class_name: Annotated[str | None, Query(description="cats or dogs; all when left out")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    try:
        rows, total = list_uploads(session, class_name, limit, offset)
    except UnknownClass as exc:
        raise HTTPException(400, str(exc)) from None
    return {"uploads": [upload_dict(row) for row in rows], "total": total, "totals": upload_counts(session)}


@router.get("/uploads/{sha256}/image", summary="One uploaded image (HEIC and TIFF as PNG unless original=true)")
def upload_image(sha256: str, store: UploadsDep, session: SessionDep, original: bool = False) -> Response:
    found = store.file_of(session, sha256)
    if found is None:
        raise HTTPException(404, f"no upload {sha256!r}")
    path, _ = found
    cache = {"Cache-Control": "private, max-age=86400"}
    if original or path.suffix in BROWSER_SUFFIXES:
        return FileResponse(path, headers=cache)
    return Response(png_bytes(path.read_bytes()), media_type="image/png", headers=cache)


@router.delete("/uploads/{sha256}", summary="Remove an upload from the training data", dependencies=[AdminDep])
def delete_upload(sha256: str, store: UploadsDep, session: SessionDep) -> dict[str, Any]:
    """409 while a retrain is queued or running: it trains on the uploads as they are."""
    active = jobs.active_job(session)
    if active is not None:
        raise HTTPException(409, f"a retrain is running (job {active.id}) on the uploads; delete after it ends")
    if not store.delete(session, sha256):
        raise HTTPException(404, f"no upload {sha256!r}")
    return {"deleted": sha256, "totals": upload_counts(session)}
