"""Training uploads (the spec's retrain page): add per class, list, view, delete, keep out of quarantine."""

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
    check_class,
    keep_upload,
    list_uploads,
    png_bytes,
    quarantine_counts,
    upload_counts,
    upload_dict,
)
from catdog.web.deps import INT64_MAX, AdminDep, ServiceDep, SessionDep, SettingsDep, StrictDigits, UploadsDep
from catdog.web.disk import DiskFull, is_disk_full
from catdog.web.openapi import error_responses
from catdog.web.problems import UploadTooLarge

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["training data"])

ClassQuery = Annotated[str, Query(description="cats or dogs")]
OPINION_CHUNK = 16  # files read (and judged by the served model, batched together) at a time


@router.post(
    "/upload-training-data",
    summary="Add images of one class to the training uploads",
    dependencies=[AdminDep],
    responses=error_responses(
        400, 401, 403, 413, 507, e400="class_name is not cats or dogs", e507="the disk is full: nothing partial is kept"
    ),
)
async def upload_training_data(
    class_name: ClassQuery,
    store: UploadsDep,
    settings: SettingsDep,
    session: SessionDep,
    service: ServiceDep,
    files: Annotated[list[UploadFile], File(description="the images, as a repeated field 'files'")],
) -> dict[str, Any]:
    """Each file is decoded like a prediction upload, stored once by content (sha256), and recorded.

    Each answer carries the served model's verdict: `predicted_class`, `p_label` (P(the class it
    was uploaded as)) and `label_agrees` (null while no model serves). Duplicates of earlier
    uploads or of the base training set are reported and not stored again; one under the other
    class is a label conflict (`status` "conflict", `conflict` true, `class` the stored one).
    """
    check_class(class_name)  # UnknownClass: 400
    if len(files) > settings.max_upload_files:
        raise UploadTooLarge(f"{len(files)} files; at most {settings.max_upload_files} per upload")
    stored, errors = [], []
    loop = asyncio.get_running_loop()
    for start in range(0, len(files), OPINION_CHUNK):
        chunk: list[tuple[str | None, bytes]] = []
        for file in files[start : start + OPINION_CHUNK]:
            data = await file.read(settings.max_upload_bytes + 1)
            if len(data) > settings.max_upload_bytes:
                limit = f"over the limit of {settings.max_upload_bytes / 2**20:g} MiB"
                errors.append({"filename": file.filename, "error": str(UploadTooLarge(limit))})
            else:
                chunk.append((file.filename, data))
        opinions = await asyncio.gather(*(service.opinion(data) for _, data in chunk))  # batched like predictions
        for (filename, data), opinion in zip(chunk, opinions, strict=True):
            try:
                entry = await loop.run_in_executor(
                    None, store.add, session, data, class_name, filename, UploadSource.UPLOAD, opinion
                )
                stored.append(entry.to_dict())
            except UsageProblem as exc:
                errors.append({"filename": filename, "error": str(exc)})
            except Exception as exc:  # one file must never cost the others their answer
                if is_disk_full(exc):  # nor would the next ones fit: stop and say so (507, catdog.web.disk)
                    raise DiskFull(_disk_full_detail(filename, len(stored))) from exc
                log.exception("could not store upload %r", filename)
                errors.append({"filename": filename, "error": "could not store this file; the server log has why"})
    duplicates = [entry for entry in stored if entry["status"] in ("duplicate", "conflict")]
    return {
        "uploaded": len(stored) - len(duplicates),
        "class": class_name,
        "files": stored,
        "duplicates": duplicates,  # label conflicts included: they are duplicates too
        "conflicts": [entry for entry in stored if entry["conflict"]],
        "errors": errors,
        "totals": upload_counts(session),
    }


def _disk_full_detail(filename: str | None, stored: int) -> str:
    earlier = f"; the {stored} file(s) before it were stored" if stored else "; nothing was stored"
    return (
        f"the disk is full: {filename or 'a file'} was not stored (no partial file is kept){earlier}. "
        "Free space in the state folder (CATDOG_STATE_DIR) and send the rest again"
    )


@router.get("/uploads", summary="The training uploads, newest first")
def uploads(
    session: SessionDep,
    class_name: Annotated[str | None, Query(description="cats or dogs; all when left out")] = None,
    limit: Annotated[int, Query(ge=1, le=500), StrictDigits] = 50,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX), StrictDigits] = 0,
    quarantined: Annotated[
        bool | None, Query(description="true: only the quarantined uploads; false: only the others; all when left out")
    ] = None,
) -> dict[str, Any]:
    rows, total = list_uploads(session, class_name, limit, offset, quarantined)  # UnknownClass: 400
    return {
        "uploads": [upload_dict(row) for row in rows],
        "total": total,
        "totals": upload_counts(session),
        "quarantine": quarantine_counts(session),
    }


@router.post(
    "/uploads/{sha256}/keep",
    summary="Keep an upload the label check quarantined: it trains, and is never quarantined again",
    dependencies=[AdminDep],
    responses=error_responses(401, 403, 404, e404="no such upload"),
)
def keep(sha256: str, session: SessionDep) -> dict[str, Any]:
    """The admin's verdict over the label check's: the upload leaves quarantine for the next retrain."""
    row = keep_upload(session, sha256)
    if row is None:
        raise HTTPException(404, f"no upload {sha256!r}")
    return {"kept": sha256, "upload": upload_dict(row), "quarantine": quarantine_counts(session)}


@router.get(
    "/uploads/{sha256}/image",
    summary="One uploaded image (HEIC and TIFF as PNG unless original=true)",
    responses=error_responses(404, e404="no upload with this sha256"),
)
def upload_image(sha256: str, store: UploadsDep, session: SessionDep, original: bool = False) -> Response:
    found = store.file_of(session, sha256)
    if found is None:
        raise HTTPException(404, f"no upload {sha256!r}")
    path, _ = found
    cache = {"Cache-Control": "private, max-age=86400"}
    if original or path.suffix in BROWSER_SUFFIXES:
        return FileResponse(path, headers=cache)
    return Response(png_bytes(path.read_bytes()), media_type="image/png", headers=cache)


@router.delete(
    "/uploads/{sha256}",
    summary="Remove an upload from the training data",
    dependencies=[AdminDep],
    responses=error_responses(401, 403, 404, 409, e404="no such upload", e409="a retrain is queued or running"),
)
def delete_upload(sha256: str, store: UploadsDep, session: SessionDep) -> dict[str, Any]:
    """409 while a retrain is queued or running: it trains on the uploads as they are."""
    active = jobs.active_job(session)
    if active is not None:
        raise HTTPException(409, f"a retrain is running (job {active.id}) on the uploads; delete after it ends")
    if not store.delete(session, sha256):
        raise HTTPException(404, f"no upload {sha256!r}")
    return {"deleted": sha256, "totals": upload_counts(session)}
