"""Under the Content-Security-Policy every page and /docs still works, with no violation reported;
Swagger UI's Authorize button sends the admin token; the models table at 375 px shows that it scrolls."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ...conftest import FIXTURES
from .conftest import ADMIN_TOKEN, Server, get_json

pytestmark = pytest.mark.usefixtures("chromium_path")

PAGES = ("/", "/predict-page", "/retrain-page", "/models-page", "/monitoring", "/docs")
CHELSEA = FIXTURES / "pets" / "chelsea.jpg"

# Collects every CSP violation the page reports (init scripts run outside the page's policy).
WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${where}`);
});
"""


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def violations(page: Any) -> list[str]:
    return list(page.evaluate("window.__cspViolations"))


@pytest.mark.parametrize("path", PAGES)
def test_pages_work_under_the_content_security_policy(page: Any, path: str) -> None:
    page.add_init_script(WATCH_CSP)
    response = page.goto(path)
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy, policy
    script_src = next(d for d in policy.split(";") if d.strip().startswith("script-src"))
    assert "unsafe-inline" not in script_src and "unsafe-eval" not in script_src, policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    page.wait_for_load_state("networkidle")
    if path == "/docs":
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("catdog")
        expect(page.get_by_text("/api/predict", exact=True).first).to_be_visible()
        page.get_by_text("/api/predict", exact=True).first.click()  # an operation opens: schemas, examples
        expect(page.locator(".opblock.is-open").first).to_be_visible()
    elif path == "/predict-page":  # a picked photo's preview (blob:) and its heat map (data:) are allowed
        page.set_input_files("#file-input", str(CHELSEA))
        page.click("#predict-button")
        card = page.locator('#results .result-card[data-state="done"]')
        expect(card).to_have_count(1)
        expect(card.locator(".result-heatmap-img")).to_be_visible()
        expect(card.locator(".result-preview")).to_be_visible()
    else:
        expect(page.locator("main#main")).to_be_visible()
    page.wait_for_timeout(500)  # a first refresh, the charts' first draw
    assert violations(page) == []
    page.watch.assert_clean()


def test_swagger_authorize_sends_the_admin_token(page: Any) -> None:
    """The OpenAPI security scheme gives /docs an Authorize button; a call made after it carries the token."""
    page.add_init_script(WATCH_CSP)
    page.goto("/docs")
    page.locator(".swagger-ui .btn.authorize").first.click()
    dialog = page.locator(".swagger-ui .modal-ux")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("AdminToken")
    dialog.get_by_label("auth-bearer-value").fill(ADMIN_TOKEN)
    dialog.get_by_role("button", name="Apply credentials").click()
    expect(dialog.get_by_role("button", name="Remove authorization")).to_be_visible()  # authorised
    dialog.get_by_role("button", name="Close", exact=True).click()
    check = page.locator("#operations-status-auth_check_api_auth_check_get")
    check.locator(".opblock-summary").click()
    check.get_by_role("button", name="Try it out").click()
    with page.expect_response(lambda r: r.url.endswith("/api/auth/check")) as answer:
        check.get_by_role("button", name="Execute").click()
    assert answer.value.status == 200
    assert answer.value.request.headers["authorization"] == f"Bearer {ADMIN_TOKEN}"
    assert violations(page) == []
    page.watch.assert_clean()


SHADOW = "Number(getComputedStyle(document.getElementById('models-scroll'), '::{side}').opacity)"


def _shadow_opacity(tab: Any, side: str) -> float:
    return float(tab.evaluate(SHADOW.format(side=side)))


def test_the_models_table_shows_that_it_scrolls_at_375_px(browser: Any, server: Server) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, base_url=server.url)
    try:
        tab = context.new_page()
        tab.goto("/models-page")
        expect(tab.locator("#models-rows tr[data-version]").first).to_be_visible()
        box, hint = tab.locator("#models-scroll"), tab.locator("#models-scroll-hint")
        wrap = box.locator(".table-wrap")
        assert wrap.evaluate("e => e.scrollWidth > e.clientWidth"), "the table fits: nothing to show"
        expect(hint).to_be_visible()
        expect(hint).to_contain_text("sideways")
        expect(box).to_have_attribute("data-more-right", "")
        tab.wait_for_function(f"() => {SHADOW.format(side='after')} == 1")  # the right edge's shadow is drawn
        assert _shadow_opacity(tab, "before") == 0  # nothing hidden on the left yet
        actions = tab.locator("#models-table thead th").last
        assert not _inside(tab, wrap, actions), "the last column is in view before scrolling"
        wrap.evaluate("e => e.scrollTo({ left: e.scrollWidth })")  # what a swipe does
        tab.wait_for_function("() => !document.getElementById('models-scroll').hasAttribute('data-more-right')")
        expect(box).to_have_attribute("data-more-left", "")
        assert _inside(tab, wrap, actions), "scrolling did not bring the last column into view"
        # the page itself never scrolls sideways: only the table does
        assert tab.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
    finally:
        context.close()


def _inside(tab: Any, wrap: Any, cell: Any) -> bool:
    outer, inner = wrap.bounding_box(), cell.bounding_box()
    return bool(inner["x"] >= outer["x"] - 1 and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 1)


def test_the_hint_shows_only_when_the_table_is_cut(page: Any) -> None:
    page.goto("/models-page")
    expect(page.locator("#models-rows tr[data-version]").first).to_be_visible()
    overflows = page.locator("#models-scroll .table-wrap").evaluate("e => e.scrollWidth > e.clientWidth")
    hint = page.locator("#models-scroll-hint")
    expect(hint).to_be_visible() if overflows else expect(hint).to_be_hidden()
    page.watch.assert_clean()


def test_the_models_page_names_the_served_model_without_a_server_path(page: Any, server: Server) -> None:
    _, status = get_json(server.url + "/api/status")
    assert re.fullmatch(r"models:/[\w.-]+/\d+", status["model_dir"]), status["model_dir"]
    assert str(server.state_dir) not in str(status)
    page.goto("/models-page")
    expect(page.locator("#model-dir")).to_have_text(status["model_dir"])
    page.watch.assert_clean()
