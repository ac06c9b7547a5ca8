"""The HTML pages: home, predict, retrain, models, monitoring (templates + one script per page).

The pages are static shells: each loads `static/js/common.js` and its own `static/js/<page>.js`,
which fetch the JSON API. No inline scripts or event handlers, nothing loaded from another host.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

import catdog
from catdog.web.deps import MaybeServiceDep
from catdog.web.service import ModelService

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parents[1] / "templates")

PAGES = {
    "/": ("index.html", "Home"),
    "/predict-page": ("predict.html", "Predict"),
    "/retrain-page": ("retrain.html", "Retrain"),
    "/models-page": ("models.html", "Models"),
    "/monitoring": ("monitoring.html", "Monitoring"),
}


def served_model(service: ModelService | None) -> tuple[str | None, str]:
    """(version, "backbone, precision") of the model being served; (None, "") while it loads (the footer)."""
    predictor = getattr(service, "predictor", None)
    version = getattr(predictor, "version", None)
    if not isinstance(version, str):
        return None, ""
    backbone = getattr(getattr(predictor, "config", None), "backbone", None)
    detail = ", ".join(str(part) for part in (backbone, getattr(predictor, "precision", None)) if part)
    return version, f"({detail})" if detail else ""


def _page(path: str, template: str, title: str) -> Callable[[Request, ModelService | None], Awaitable[HTMLResponse]]:
    script = template.removesuffix(".html") + ".js"

    async def render(request: Request, service: MaybeServiceDep) -> HTMLResponse:
        model_version, model_detail = served_model(service)
        context = {
            "title": title,
            "pages": PAGES,
            "current_path": path,
            "page_script": script,
            "asset_version": catdog.__version__,
            "model_version": model_version,
            "model_detail": model_detail,
        }
        return templates.TemplateResponse(request, template, context)

    return render


for _path, (_template, _title) in PAGES.items():
    router.add_api_route(_path, _page(_path, _template, _title), methods=["GET", "HEAD"], response_class=HTMLResponse)
