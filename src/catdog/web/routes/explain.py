"""Grad-CAM heat maps of recent predictions, computed when asked (one more pass of the model)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from catdog.web.deps import ServiceDep
from catdog.web.explanations import is_prediction_id
from catdog.web.openapi import error_responses

router = APIRouter(prefix="/api", tags=["predictions"])


@router.get(
    "/explain/{prediction_id}",
    summary="The Grad-CAM heat map of a recent prediction, drawn over the photo (PNG)",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}},
        **error_responses(
            404,
            410,
            e404="unknown or expired prediction id",
            e410="the model version that answered is no longer served",
        ),
    },
)
async def explain(prediction_id: str, service: ServiceDep) -> Response:
    if not is_prediction_id(prediction_id):
        raise HTTPException(404, "not a prediction id (32 hexadecimal digits)")
    png = await service.explanation_png(prediction_id)  # 410 (ExplanationUnavailable) when its model is gone
    if png is None:
        raise HTTPException(404, f"no explanation kept for {prediction_id} (the newest predictions are kept)")
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
