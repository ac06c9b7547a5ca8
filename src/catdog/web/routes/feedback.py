"""Feedback on predictions: the right label, live accuracy per version, corrected images into training."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from catdog.db import feedback as feedback_db
from catdog.db.models import Upload, UploadSource
from catdog.uploads import InTestSplit
from catdog.web.deps import AdminDep, ServiceDep, SessionDep, UploadsDep
from catdog.web.openapi import error_responses
from catdog.web.ratelimit import FeedbackClient

router = APIRouter(prefix="/api", tags=["feedback"])

CLASS_FOLDERS = {"cat": "cats", "dog": "dogs"}


class FeedbackIn(BaseModel):
    prediction_id: str = Field(min_length=1, max_length=64)
    correct_label: Literal["cat", "dog"]


@router.post(
    "/feedback",
    summary="Say what a prediction should have been",
    status_code=201,
    responses=error_responses(
        404, 409, 413, 429, e404="no such prediction (yet)", e409="this prediction already has a verdict"
    ),
)
def give_feedback(body: FeedbackIn, session: SessionDep, service: ServiceDep, client: FeedbackClient) -> JSONResponse:
    """Open to everyone, at most CATDOG_FEEDBACK_RATE_LIMIT per client address (then 429 with Retry-After).

    404 for a prediction id the database does not know (yet), 409 for a second verdict on it.
    `counted`: whether live accuracy counts this verdict (the first on its picture for its version).
    """
    if service.writer is not None:
        service.writer.flush(timeout=2.0)  # a prediction answered a moment ago may still be buffered
    # UnknownPrediction: 404; AlreadyGiven: 409
    row = feedback_db.add_feedback(session, body.prediction_id, body.correct_label, client)
    answer = {**feedback_db.feedback_dict(row), "counted": feedback_db.is_counted(session, row)}
    return JSONResponse(answer, status_code=201)


@router.post(
    "/feedback/{feedback_id}/add-to-training",
    summary="Add a corrected prediction's image to the training uploads",
    dependencies=[AdminDep],
    responses=error_responses(
        401, 403, 404, 409, 410, 413, e404="no such feedback", e409="the image is in the test split"
    ),
)
async def add_to_training(
    feedback_id: str, session: SessionDep, service: ServiceDep, store: UploadsDep
) -> dict[str, Any]:
    """The image is the model's input as kept for explanations (224 px JPEG), labelled with the correct class.

    It is checked as an upload is, by the photo the prediction was made on: 409 for a photo of the
    test split, for a label conflict (the photo is in the base set or the uploads under the other
    class) and for a photo already there under this class; the answer carries the served model's
    opinion (`predicted_class`, `p_label`, `label_agrees`) as an upload's does.
    """
    row = feedback_db.get_feedback(session, feedback_id)
    if row is None:
        raise HTTPException(404, f"no feedback {feedback_id!r}")
    original = feedback_db.content_of(session, row.prediction_id)
    if original in store.test_hashes():
        raise InTestSplit()  # 409
    label = CLASS_FOLDERS[row.correct_label]
    if original is not None:
        upload = session.get(Upload, original)
        for where, known in (
            ("the base training set", store.base_hashes().get(original)),
            ("the uploads", upload.class_name if upload is not None else None),
        ):
            if known is not None and known != label:
                raise HTTPException(
                    409, f"label conflict: this photo is in {where} as {known}, the feedback says {label}; not added"
                )
            if known is not None:
                raise HTTPException(409, f"this photo is already in {where} as {known}: nothing to add")
    data = service.explanations.input_jpeg(row.prediction_id)
    if data is None:
        raise HTTPException(410, "the prediction's image is no longer kept (only the newest are): upload it instead")
    opinion = await service.opinion(data)
    entry = await run_in_threadpool(
        store.add, session, data, label, f"feedback-{row.id}.jpg", UploadSource.FEEDBACK, opinion
    )
    feedback_db.mark_added(session, row, entry.sha256)
    return entry.to_dict()
