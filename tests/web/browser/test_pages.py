"""The pages in a real browser: they load clean, predict with a picked or dropped photo, warn about
non-pets, show the server's error for an unreadable file, work from the keyboard and at 375 px,
and the monitoring charts draw real data. Saves the README's screenshots."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from ...conftest import CATSDOGS, FIXTURES
from .conftest import (
    LOW_CONTRAST_JS,
    UNLABELLED_JS,
    Server,
    get_json,
    install_metrics,
    registry_model_dir,
    remove_metrics,
    sticking_out,
)

pytestmark = pytest.mark.usefixtures("chromium_path")

PAGES = {
    "/": "Cats vs dogs, served and monitored",
    "/predict-page": "Classify photos",
    "/retrain-page": "Retrain the model",
    "/models-page": "Models",
    "/monitoring": "Monitoring",
}
CHELSEA = FIXTURES / "pets" / "chelsea.jpg"
COFFEE = FIXTURES / "nonpet" / "coffee.jpg"
NOTES = FIXTURES / "bad" / "notes.txt"
TEST_IMAGES = sorted((CATSDOGS / "test" / "cats").iterdir()) + sorted((CATSDOGS / "test" / "dogs").iterdir())
TRAIN_IMAGES = sorted((CATSDOGS / "train" / "cats").iterdir()) + sorted((CATSDOGS / "train" / "dogs").iterdir())
CHARTS = ("requests", "latency", "classes", "confidence", "batches", "cache", "dataset", "system")


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def done_cards(page: Any) -> Any:
    return page.locator('#results .result-card[data-state="done"]')


def assert_result(card: Any) -> None:
    """A finished card: a class label, a confidence bar matching the text, a heat map that loaded."""
    label = card.locator(".result-class")
    expect(label).to_have_text(re.compile(r"^(Cat|Dog)$"))
    assert card.get_attribute("data-predicted-class") == label.inner_text().lower()
    meter = card.locator('.confidence[role="meter"]')
    value = float(meter.get_attribute("aria-valuenow"))
    assert 50 <= value <= 100
    shown = float(card.locator(".result-confidence").inner_text().split("%")[0])
    assert shown == pytest.approx(value, abs=0.06)
    assert card.locator(".confidence-fill").evaluate("e => e.style.width") == f"{value:g}%"
    heatmap = card.locator(".result-heatmap-img")
    expect(heatmap).to_be_visible()
    expect(heatmap).to_have_attribute("alt", re.compile("Heat map"))
    loaded = heatmap.evaluate(  # wait for a heat map still on its way (fetched on demand): load or error
        """img => img.complete ? img.naturalWidth > 0 : new Promise((done) => {
            img.addEventListener("load", () => done(img.naturalWidth > 0), { once: true });
            img.addEventListener("error", () => done(false), { once: true });
        })"""
    )
    assert loaded, "the heat map did not load"


def drop_files(page: Any, selector: str, paths: list[Path]) -> None:
    """Simulate dropping files from the desktop: dragenter, dragover, drop with a DataTransfer."""
    files = [{"name": p.name, "data": base64.b64encode(p.read_bytes()).decode()} for p in paths]
    page.evaluate(
        """([selector, files]) => {
            const transfer = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], f.name, { type: "image/jpeg" }));
            }
            const target = document.querySelector(selector);
            for (const type of ["dragenter", "dragover", "drop"]) {
                target.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }));
            }
        }""",
        [selector, files],
    )


def tab_to(page: Any, predicate: str, limit: int = 40) -> None:
    """Press Tab until `predicate` (JS, over document.activeElement as `el`) holds."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const el = document.activeElement; return Boolean({predicate}); }})()"):
            return
    raise AssertionError(f"Tab never reached an element where {predicate}")


def scroll_to(page: Any, selector: str, margin: int) -> None:
    """Scroll so that `selector` sits `margin` px below the top of the viewport (for screenshots)."""
    page.locator(selector).evaluate(
        "(e, margin) => window.scrollTo(0, e.getBoundingClientRect().top + window.scrollY - margin)", margin
    )


def post_images(server: Server, paths: list[Path]) -> list[dict[str, Any]]:
    answers = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for path in paths:
            response = client.post("/api/predict", files={"file": (path.name, path.read_bytes(), "image/jpeg")})
            assert response.status_code == 200, response.text
            answers.append(response.json())
    return answers


# --- every page ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_loads_clean_with_nav_footer_and_nothing_from_another_host(
    page: Any, server: Server, path: str
) -> None:
    page.goto(path)
    page.wait_for_load_state("networkidle")
    expect(page.locator("h1")).to_have_text(PAGES[path])
    expect(page.locator("main#main")).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    for name in ("Home", "Predict", "Retrain", "Models", "Monitoring", "API docs"):
        expect(nav.get_by_role("link", name=name, exact=True)).to_be_visible()
    expect(nav.locator('[aria-current="page"]')).to_have_attribute("href", path)
    _, status = get_json(server.url + "/api/status")
    expect(page.locator("#footer-model-version")).to_have_text(status["model_version"])
    page.wait_for_timeout(300)  # let a first refresh finish
    assert all(r.startswith((server.url, "blob:", "data:")) for r in page.watch.requests)
    assert page.evaluate(UNLABELLED_JS) == [], "form controls without a label"
    assert page.evaluate(LOW_CONTRAST_JS) == [], "text below WCAG AA contrast"
    page.watch.assert_clean()


def test_api_docs_link_loads_swagger_from_the_server(page: Any) -> None:
    page.goto("/")
    page.get_by_role("link", name="API docs", exact=True).first.click()
    expect(page.locator(".swagger-ui")).to_be_visible()
    expect(page.get_by_text("/api/predict", exact=True).first).to_be_visible()
    page.watch.assert_clean()


@pytest.mark.parametrize("path", list(PAGES))
def test_pages_fit_a_375_px_screen(browser: Any, server: Server, path: str) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, base_url=server.url)
    try:
        tab = context.new_page()
        tab.goto(path)
        tab.wait_for_load_state("networkidle")
        overflow = tab.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow} px at 375 px: {sticking_out(tab)}"
    finally:
        context.close()


# --- home -----------------------------------------------------------------------------------------------
def test_home_shows_status_metrics_and_dataset(
    page: Any, server: Server, save_screenshot: Callable[[Any, str], Path | None]
) -> None:
    page.goto("/")
    _, status = get_json(server.url + "/api/status")
    _, metrics = get_json(server.url + "/api/metrics")
    _, stats = get_json(server.url + "/api/dataset-stats")
    expect(page.locator("#status-state")).to_have_text("healthy")
    expect(page.locator("#status-uptime")).to_have_text(re.compile(r"\d+h \d+m \d+s"))
    expect(page.locator("#status-model-version")).to_have_text(status["model_version"])
    expect(page.locator("#status-backbone")).to_contain_text("efficientnet_lite0")
    expect(page.locator("#metric-accuracy")).to_have_text(f"{metrics['accuracy'] * 100:.2f}%")
    expect(page.locator("#metric-roc-auc")).to_have_text(f"{metrics['roc_auc']:.4f}")
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    for cell, value in (("cm-tn", tn), ("cm-fp", fp), ("cm-fn", fn), ("cm-tp", tp)):
        expect(page.locator(f"#{cell}")).to_have_text(f"{value:,}")
    plots = page.locator("#metrics-plots img")
    expect(plots).to_have_count(len(metrics["plots"]))
    assert len(metrics["plots"]) >= 3
    for i in range(plots.count()):
        plots.nth(i).scroll_into_view_if_needed()
        expect(plots.nth(i)).to_have_attribute("alt", re.compile(r"\w+"))
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=plots.nth(i).element_handle())
    for folder in ("training", "testing", "retraining"):
        cells = page.locator(f"#dataset-{folder} td")
        expect(cells.nth(0)).to_have_text(f"{stats[folder]['cats']:,}")
        expect(cells.nth(1)).to_have_text(f"{stats[folder]['dogs']:,}")
        expect(cells.nth(2)).to_have_text(f"{stats[folder]['total']:,}")
    assert stats["training"]["total"] > 0
    page.evaluate("window.scrollTo(0, 0)")
    save_screenshot(page, "home.png")
    page.watch.assert_clean()


def test_home_refreshes_live(page: Any, server: Server) -> None:
    page.goto("/")
    expect(page.locator("#status-state")).to_have_text("healthy")
    before = page.locator("#status-predictions").inner_text()
    post_images(server, [TRAIN_IMAGES[-1]])
    expect(page.locator("#status-predictions")).not_to_have_text(before, timeout=12_000)
    page.watch.assert_clean()


def test_home_copes_with_a_model_without_metrics(page: Any, server: Server, evaluation: Path) -> None:
    _, models = get_json(server.url + "/api/models")
    served_dir = registry_model_dir(server, models["served"]["production"]["version"])  # production's local copy
    assert served_dir.is_dir(), models
    remove_metrics(served_dir)
    try:
        page.goto("/")
        expect(page.locator("#metrics-missing")).to_be_visible()
        expect(page.locator("#metrics-missing")).to_contain_text("No evaluation for this model yet")
        expect(page.locator("#metrics-body")).to_be_hidden()
        expect(page.locator("#status-state")).to_have_text("healthy")
        expect(page.locator("#dataset-training td").first).not_to_have_text("…")
        page.goto("/retrain-page")
        expect(page.locator("#served-accuracy")).to_have_text("not evaluated")
        page.watch.assert_clean()  # the pages ask /api/status first: no 404 to excuse
    finally:
        install_metrics(served_dir, evaluation)


# --- predict --------------------------------------------------------------------------------------------
def test_predict_a_picked_photo_shows_label_confidence_and_heat_map(page: Any) -> None:
    page.goto("/predict-page")
    expect(page.locator("#predict-button")).to_be_disabled()
    page.set_input_files("#file-input", str(CHELSEA))
    card = page.locator("#results .result-card")
    expect(card).to_have_count(1)
    expect(card.locator(".result-name")).to_have_text("chelsea.jpg")
    expect(card.locator(".result-preview")).to_be_visible()
    page.click("#predict-button")
    expect(done_cards(page)).to_have_count(1)
    assert_result(card)
    src = card.locator(".result-heatmap-img").get_attribute("src")
    assert src.startswith("data:image/png;base64,")
    expect(card.locator(".result-pet-warning")).to_be_hidden()
    expect(page.locator("#predict-status")).to_contain_text("chelsea.jpg:")
    expect(page.locator("#predict-status")).to_have_attribute("aria-live", "polite")
    page.watch.assert_clean()


def test_predict_a_dropped_photo(page: Any) -> None:
    page.goto("/predict-page")
    dog = CATSDOGS / "test" / "dogs" / sorted(p.name for p in (CATSDOGS / "test" / "dogs").iterdir())[0]
    drop_files(page, "#file-label", [dog])
    expect(page.locator("#results .result-card")).to_have_count(1)
    expect(page.locator("#predict-button")).to_be_enabled()
    page.click("#predict-button")
    expect(done_cards(page)).to_have_count(1)
    assert_result(done_cards(page).first)
    expect(done_cards(page).first.locator(".result-name")).to_have_text(dog.name)
    page.watch.assert_clean()


def test_predict_several_photos_at_once(page: Any, save_screenshot: Callable[[Any, str], Path | None]) -> None:
    page.goto("/predict-page")
    photos = [CHELSEA, TEST_IMAGES[-1], COFFEE]
    page.set_input_files("#file-input", [str(p) for p in photos])
    expect(page.locator("#results .result-card")).to_have_count(3)
    expect(page.locator("#predict-button")).to_have_text("Predict 3 photos")
    page.click("#predict-button")
    expect(done_cards(page)).to_have_count(3)
    for i, photo in enumerate(photos):
        card = page.locator("#results .result-card").nth(i)
        expect(card.locator(".result-name")).to_have_text(photo.name)
        assert_result(card)
    expect(page.locator("#predict-status")).to_contain_text("3 photos:")
    scroll_to(page, "#predict-form", 12)
    page.wait_for_timeout(500)  # the confidence bars' transition
    save_screenshot(page, "predict.png")
    assert page.evaluate(LOW_CONTRAST_JS) == [], "text below WCAG AA contrast"
    page.click("#clear-button")
    expect(page.locator("#results .result-card")).to_have_count(0)
    expect(page.locator("#file-input")).to_be_focused()
    page.watch.assert_clean()


def test_a_non_pet_photo_shows_the_is_it_a_pet_warning(page: Any, server: Server) -> None:
    page.goto("/predict-page")
    page.set_input_files("#file-input", str(COFFEE))
    page.click("#predict-button")
    card = done_cards(page)
    expect(card).to_have_count(1)
    warning = card.locator(".result-pet-warning")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("does not look like a cat or a dog")
    expect(page.locator("#predict-status")).to_contain_text("may not be a pet")
    page.watch.assert_clean()


def test_an_unreadable_file_shows_the_servers_error(page: Any, server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        direct = client.post("/api/predict", files={"file": (NOTES.name, NOTES.read_bytes(), "text/plain")})
    assert direct.status_code == 415
    page.goto("/predict-page")
    page.set_input_files("#file-input", str(NOTES))
    page.click("#predict-button")
    card = page.locator('#results .result-card[data-state="error"]')
    expect(card).to_have_count(1)
    error = card.locator(".result-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(direct.json()["detail"])
    expect(error).to_contain_text("415")
    expect(card.locator(".no-preview")).to_be_visible()
    expect(page.locator("#predict-status")).to_contain_text("not classified")
    page.watch.assert_clean(expected_errors=((415, "/api/predict"),))


def test_predict_page_works_from_the_keyboard(page: Any) -> None:
    choosers: list[Any] = []
    page.on("filechooser", lambda chooser: choosers.append(chooser))  # intercept before any key is pressed
    page.goto("/predict-page")
    tab_to(page, "el.id === 'file-input'")
    focus_ring = page.locator("#drop-zone").evaluate("e => getComputedStyle(e).outlineStyle")
    assert focus_ring != "none", "the focused upload control shows no focus ring"
    photos = [CHELSEA, TEST_IMAGES[1]]
    for key, photo in zip(("Enter", "Space"), photos, strict=True):  # both keys open the picker
        page.keyboard.press(key)
        deadline = 50
        while not choosers and deadline:
            page.wait_for_timeout(100)
            deadline -= 1
        assert choosers, f"{key} on the upload control opened no file picker"
        chooser = choosers.pop()
        assert chooser.is_multiple()
        chooser.set_files(str(photo))
        expect(page.locator("#file-input")).to_be_focused()
    expect(page.locator("#results .result-card")).to_have_count(2)
    page.keyboard.press("Tab")
    expect(page.locator("#explain-toggle")).to_be_focused()
    page.keyboard.press("Space")  # no heat map with the answer: fetch it on demand instead
    expect(page.locator("#explain-toggle")).not_to_be_checked()
    page.keyboard.press("Tab")
    expect(page.locator("#predict-button")).to_be_focused()
    page.keyboard.press("Enter")
    expect(done_cards(page)).to_have_count(2)
    card = done_cards(page).first
    expect(card.locator(".result-heatmap")).to_be_hidden()
    tab_to(page, "el.id && el.id.startsWith('show-heatmap-')")
    page.keyboard.press("Enter")
    assert_result(card)
    assert card.locator(".result-heatmap-img").get_attribute("src").startswith("/api/explain/")
    expect(card.locator(".result-heatmap")).to_be_focused()
    tab_to(page, "el.id === 'clear-button'")
    page.keyboard.press("Enter")
    expect(page.locator("#results .result-card")).to_have_count(0)
    page.watch.assert_clean()


# --- monitoring -----------------------------------------------------------------------------------------
def test_monitoring_charts_render_with_data(
    page: Any, server: Server, save_screenshot: Callable[[Any, str], Path | None]
) -> None:
    answers = post_images(server, TEST_IMAGES + TRAIN_IMAGES[:6] + [TEST_IMAGES[0]])  # the last one: a cache hit
    assert answers[-1]["cached"] is True
    with httpx.Client(base_url=server.url, timeout=60) as client:
        files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in TRAIN_IMAGES[6:10]]
        assert client.post("/api/predict/batch", files=files).status_code == 200
        client.get("/api/drift", params={"refresh": "true"})
    page.goto("/monitoring")
    page.wait_for_function(
        "() => { const c = Chart.getChart('chart-classes'); return c && c.data.datasets[0].data.some((v) => v > 0); }",
        timeout=20_000,
    )
    for key in CHARTS:
        info = page.evaluate(
            """(key) => {
                const chart = Chart.getChart('chart-' + key);
                const canvas = chart.canvas;
                const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
                let drawn = 0;
                for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) drawn++;
                const values = chart.data.datasets.flatMap((d) => d.data).filter((v) => v !== null);
                return {
                    drawn, width: canvas.width, height: canvas.height,
                    values: values.length, total: values.reduce((a, b) => a + Number(b), 0),
                    empty: !document.getElementById('chart-' + key + '-empty').hidden,
                    label: canvas.getAttribute('aria-label'),
                };
            }""",
            key,
        )
        assert info["width"] > 0 and info["height"] > 0, (key, info)
        assert info["drawn"] > 1000, f"chart {key} looks blank: {info}"
        assert info["values"] > 0 and info["total"] > 0, f"chart {key} has no data: {info}"
        assert not info["empty"], f"chart {key} says it has no data: {info}"
        assert "not enough data" not in info["label"], (key, info)
    expect(page.locator("#kpi-cache")).not_to_have_text("–")
    expect(page.locator("#kpi-p95")).to_have_text(re.compile(r"\d+(\.\d+)? (ms|s)"))
    expect(page.locator("#sys-cpu")).to_contain_text("cores")
    expect(page.locator("#sys-uptime")).to_have_text(re.compile(r"\d+h \d+m \d+s"))
    batch_labels = page.evaluate("Chart.getChart('chart-batches').data.labels")
    assert batch_labels, "no batch sizes"
    drift_shown = page.locator("#drift-body").is_visible()
    if drift_shown:  # every drift value names its test and threshold
        expect(page.locator("#drift-ks")).to_have_text(re.compile(r"K-S p-value [\d.]+ \(drift below [\d.]+\)"))
        expect(page.locator("#drift-psi")).to_have_text(re.compile(r"PSI [\d.]+ \(drift above [\d.]+\)"))
    else:
        expect(page.locator("#drift-empty")).to_contain_text("Not enough data yet")
    page.select_option("#window-select", "15")  # the screenshot shows the last 15 minutes
    page.wait_for_function("() => Chart.getChart('chart-requests').data.labels.length === 15")
    page.wait_for_timeout(400)  # the charts' animation
    save_screenshot(page, "monitoring.png")
    page.watch.assert_clean()


def drift_row(window: int, shift: float = 0.0) -> dict[str, Any]:
    """A real catdog.ml.drift report on synthetic data, as the database layer stores it (report in details)."""
    import numpy as np

    from catdog.ml.drift import DriftReference, compute_drift

    rng = np.random.default_rng(0)
    reference = DriftReference(
        features_train={"fp32": rng.normal(size=(80, 16)).astype(np.float16)},
        p_dog_test=rng.uniform(size=300).astype(np.float32),
        meta={},
    )
    recent_p = np.clip(rng.uniform(size=window) + shift, 0, 1)
    report = compute_drift(reference, recent_p, rng.normal(size=(window, 16)) + shift, "fp32").to_dict()
    prediction, feature = report["prediction"], report["feature"]
    return {
        "id": "0" * 32,
        "created_at": "2026-01-01T12:00:00+00:00",
        "model_version": "tiny",
        "window_size": report["window_size"],
        "ks_statistic": prediction["ks_statistic"],
        "ks_p_value": prediction["ks_p_value"],
        "psi": prediction["psi"],
        "prediction_drift": prediction["drift"],
        "domain_auc": feature["roc_auc"],
        "domain_threshold": feature["auc_threshold"],
        "feature_drift": feature["drift"],
        "details": report,
    }


@pytest.mark.parametrize("shift", [0.0, 0.4], ids=["no-drift", "drift"])
def test_monitoring_names_each_drift_test_and_threshold(page: Any, shift: float) -> None:
    row = drift_row(120, shift)
    prediction, feature = row["details"]["prediction"], row["details"]["feature"]

    def with_report(route: Any) -> None:
        body = route.fetch().json()
        route.fulfill(json={**body, "drift": row})

    page.route("**/api/monitoring?*", with_report)
    page.goto("/monitoring")
    expect(page.locator("#drift-body")).to_be_visible()
    expect(page.locator("#drift-ks")).to_have_text(
        re.compile(rf"^K-S p-value [\d.e+-]+ \(drift below {prediction['ks_p_value_threshold']:g}\)$")
    )
    psi_limit, auc_limit = round(prediction["psi_threshold"], 3), round(feature["auc_threshold"], 3)
    expect(page.locator("#drift-psi")).to_have_text(f"PSI {row['psi']:.3f} (drift above {psi_limit:g})")
    expect(page.locator("#drift-auc")).to_have_text(
        f"Domain classifier ROC-AUC {row['domain_auc']:.3f} (drift above {auc_limit:g})"
    )
    for kind, fired in (("prediction", row["prediction_drift"]), ("feature", row["feature_drift"])):
        expect(page.locator(f"#drift-{kind}-verdict")).to_have_text("drift" if fired else "no drift")
    assert row["prediction_drift"] is (shift > 0) and row["feature_drift"] is (shift > 0)
    expect(page.locator("#drift-prediction-test")).to_contain_text("Kolmogorov-Smirnov")
    expect(page.locator("#drift-feature-test")).to_contain_text("domain classifier")
    expect(page.locator("#drift-meta")).to_contain_text("120 recent predictions")
    page.watch.assert_clean()


def test_monitoring_says_why_a_small_window_has_no_drift_verdict(page: Any) -> None:
    row = drift_row(12)
    assert row["ks_p_value"] is None and row["domain_auc"] is None

    def with_report(route: Any) -> None:
        route.fulfill(json={**route.fetch().json(), "drift": row})

    page.route("**/api/monitoring?*", with_report)
    page.goto("/monitoring")
    for kind in ("prediction", "feature"):
        expect(page.locator(f"#drift-{kind}-reason")).to_contain_text("Not enough data yet: window too small")
        expect(page.locator(f"#drift-{kind}-verdict")).to_have_text("no verdict")
        expect(page.locator(f"#drift-{kind}-figures")).to_be_hidden()
    page.watch.assert_clean()


def test_monitoring_refreshes_live_and_can_pause(page: Any, server: Server) -> None:
    page.goto("/monitoring")
    expect(page.locator("#monitoring-updated")).to_contain_text("refreshes every 5 s")
    samples = "Chart.getChart('chart-system').data.labels.length"
    page.wait_for_function(f"() => {samples} >= 2", timeout=15_000)
    page.get_by_role("button", name="Pause live refresh").click()
    expect(page.locator("#refresh-toggle")).to_have_text("Resume live refresh")
    paused_at = page.evaluate(samples)
    page.wait_for_timeout(6_000)
    assert page.evaluate(samples) == paused_at
    page.locator("#refresh-toggle").click()
    page.wait_for_function(f"() => {samples} > {paused_at}", timeout=10_000)
    page.select_option("#window-select", "15")
    page.wait_for_function("() => Chart.getChart('chart-requests').data.labels.length === 15", timeout=10_000)
    # a hidden tab asks for nothing; showing it again refreshes at once
    hide = "hidden => { Object.defineProperty(document, 'hidden', {value: hidden, configurable: true}); }"
    page.evaluate(hide, True)
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    hidden_at = page.evaluate(samples)
    page.wait_for_timeout(6_000)
    assert page.evaluate(samples) == hidden_at
    page.evaluate(hide, False)
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    page.wait_for_function(f"() => {samples} > {hidden_at}", timeout=3_000)
    page.watch.assert_clean()


# --- retrain and models (the admin flows: test_retrain_models.py) ------------------------------------------
def test_retrain_page_shows_the_state_with_working_controls(page: Any, server: Server) -> None:
    page.goto("/retrain-page")
    _, retrain = get_json(server.url + "/api/retrain-status")
    _, stats = get_json(server.url + "/api/dataset-stats")
    expect(page.locator("#retrain-running")).to_have_text("yes" if retrain["is_retraining"] else "no")
    expect(page.locator("#retrain-total")).to_have_text(str(retrain["total_retrains"]))
    expect(page.locator("#retrain-updated")).to_contain_text("refreshes every")
    for part in ("training", "retraining", "testing"):
        expect(page.locator(f"#dataset-{part} td").nth(2)).to_have_text(f"{stats[part]['total']:,}")
    expect(page.get_by_role("button", name="Start retraining")).to_be_enabled()
    expect(page.get_by_role("button", name="Upload files")).to_be_disabled()  # until files are chosen
    expect(page.get_by_label("Images", exact=True)).to_be_enabled()
    expect(page.get_by_label("Cats", exact=True)).to_be_checked()
    expect(page.locator("#jobs-rows tr").first).not_to_have_text("Loading…")
    expect(page.locator("#uploads-count")).not_to_be_empty()
    _, status = get_json(server.url + "/api/status")
    expect(page.locator("#served-version")).to_have_text(status["model_version"])
    expect(page.locator("#served-accuracy")).to_contain_text("%")
    page.watch.assert_clean()


def test_models_page_lists_the_registry(page: Any, server: Server) -> None:
    page.goto("/models-page")
    _, registry = get_json(server.url + "/api/models")
    _, status = get_json(server.url + "/api/status")
    expect(page.locator("#models-rows tr[data-version]")).to_have_count(len(registry["versions"]))
    production = registry["production"]
    assert production is not None, registry
    row = page.locator(f"#model-row-{production}")
    expect(row.locator('[data-alias="production"]')).to_be_visible()
    expect(row.get_by_role("button", name=f"Version {production} is production")).to_be_disabled()
    expect(page.locator("#served-production")).to_contain_text(f"version {registry['served']['production']['version']}")
    expect(page.locator("#model-dir")).to_have_text(status["model_dir"])
    expect(page.get_by_role("button", name="Roll back production")).to_be_enabled()
    page.watch.assert_clean()
