"""The page templates without a browser or a model: structure, no inline code, every asset served locally."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.testclient import TestClient

from catdog.web.routes import pages

STATIC = Path(pages.__file__).resolve().parents[1] / "static"


class Collector(HTMLParser):
    """Tags with their attributes, and whether each <script> had a body."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


@pytest.fixture(scope="module")
def client() -> TestClient:
    """Only the pages and the static files: the templates render before the model is loaded."""
    app = FastAPI()
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return TestClient(app)


def parse(html: str) -> Collector:
    collector = Collector()
    collector.feed(html)
    return collector


@pytest.mark.parametrize("path", list(pages.PAGES))
def test_page_structure_and_no_inline_code(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = parse(response.text)
    tags = [tag for tag, _ in page.tags]
    assert tags.count("h1") == 1
    for landmark in ("header", "nav", "main", "footer"):
        assert landmark in tags, landmark
    assert page.inline_scripts == 0, "inline <script>"
    handlers = [(tag, name) for tag, attrs in page.tags for name in attrs if name.startswith("on")]
    assert handlers == [], f"inline event handlers: {handlers}"
    assert not [tag for tag, attrs in page.tags if "style" in attrs], "inline style attributes"
    scripts = [attrs["src"] for tag, attrs in page.tags if tag == "script"]
    script_name = pages.PAGES[path][0].replace(".html", ".js")
    assert any(src and src.startswith("/static/js/common.js") for src in scripts)
    assert any(src and src.startswith(f"/static/js/{script_name}") for src in scripts)
    assert ("html", {"lang": "en"}) in page.tags
    assert any(tag == "meta" and attrs.get("name") == "viewport" for tag, attrs in page.tags)
    current = [attrs["href"] for tag, attrs in page.tags if tag == "a" and attrs.get("aria-current") == "page"]
    assert current == [path]
    assert any(tag == "a" and attrs.get("href") == "/docs" for tag, attrs in page.tags)
    assert "(loading)" in response.text  # no model in this app: the footer says so


@pytest.mark.parametrize("path", list(pages.PAGES))
def test_every_asset_is_served_by_the_app(client: TestClient, path: str) -> None:
    page = parse(client.get(path).text)
    urls = [attrs.get("src") or attrs.get("href") for tag, attrs in page.tags if tag in ("script", "link")]
    urls += [attrs["src"] for tag, attrs in page.tags if tag == "img" and attrs.get("src")]  # <template> imgs: none
    assert urls
    for url in urls:
        assert url and url.startswith("/static/"), f"asset not served by catdog: {url}"
        assert client.get(url).status_code == 200, url


@pytest.mark.parametrize("path", list(pages.PAGES))
def test_every_form_control_has_a_label(client: TestClient, path: str) -> None:
    page = parse(client.get(path).text)
    labelled = {attrs.get("for") for tag, attrs in page.tags if tag == "label"}
    for tag, attrs in page.tags:
        if tag in ("input", "select", "textarea") and attrs.get("type") != "hidden":
            assert attrs.get("id") in labelled or attrs.get("aria-label"), f"{tag} {attrs} has no label"


def test_scripts_have_no_eval_html_injection_or_foreign_urls() -> None:
    for script in sorted((STATIC / "js").glob("*.js")):
        text = script.read_text()
        assert "innerHTML" not in text, f"{script.name}: build DOM with textContent (catdog.el), not innerHTML"
        assert not re.search(r"\beval\(|new Function\(", text), script.name
        assert not re.search(r"https?://", text), f"{script.name} names an outside URL"


def test_stylesheet_loads_no_web_fonts_or_outside_files() -> None:
    for sheet in (STATIC / "css").glob("*.css"):
        text = sheet.read_text()
        assert "@import" not in text and "@font-face" not in text, sheet.name
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", text), sheet.name


def test_vendored_files_name_their_source_and_licence() -> None:
    readme = (STATIC / "vendor" / "README.md").read_text()
    for needle in ("chart.js@4.6.1", "swagger-ui-dist@5.35.0", "npm pack", "MIT", "Apache-2.0"):
        assert needle in readme, needle
    assert (STATIC / "vendor" / "chartjs" / "LICENSE.md").is_file()
    assert (STATIC / "vendor" / "swagger-ui" / "LICENSE").is_file()
    assert "Chart.js v4.6.1" in (STATIC / "vendor" / "chartjs" / "chart.umd.min.js").read_text()[:200]
