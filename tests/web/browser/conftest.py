"""Browser tests: the real server in a subprocess, Playwright driving Debian's chromium.

One server per session (uvicorn, `catdog.web.app:create_app`) serves a copy of the tiny Lite0
model on a free 127.0.0.1 port with a state folder of its own; one chromium per session; a new
browser context per test. Every test watches its page: console errors, uncaught exceptions,
failed requests, 4xx/5xx answers, and any request to a host other than the test server.

The server's admin token is ADMIN_TOKEN (CATDOG_ADMIN_TOKEN); sign_in(page) enters it the way a
user does, through the token dialog in the footer.

Screenshots for the README go to docs/screenshots/ when missing, when they changed meaningfully
(more than SCREENSHOT_CHANGE of their pixels), or always with CATDOG_SCREENSHOTS=update.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from ...conftest import CATSDOGS

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
REPO = Path(__file__).resolve().parents[3]
SCREENSHOTS = REPO / "docs" / "screenshots"
SCREENSHOT_CHANGE = 0.03  # share of pixels that must differ before a committed screenshot is replaced
VIEWPORT = {"width": 1280, "height": 800}
READY_TIMEOUT = 180.0
ADMIN_TOKEN = "browser-test-admin-token-5f0c"  # the server's admin token (CATDOG_ADMIN_TOKEN)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str, timeout: float = 10) -> tuple[int, Any]:
    """(status, parsed JSON body) of a GET, without raising on 4xx/5xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if body else None


@dataclass
class Server:
    url: str
    model_dir: Path
    state_dir: Path
    log: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="package")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="browser tests need Playwright for Python (the dev extra)")
    return CHROMIUM


@pytest.fixture(scope="package")
def served_model(lite0_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the tiny Lite0 model: tests add or remove its metrics.json and plots."""
    return Path(shutil.copytree(lite0_model, tmp_path_factory.mktemp("served") / "tiny_lite0"))


@pytest.fixture(scope="package")
def evaluation(served_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's real evaluation on the fixture test images: a folder with metrics.json and plots/."""
    from catdog.ml.artifacts import HISTORY_JSON, METRICS_JSON, PLOTS_DIR, write_json
    from catdog.ml.evaluate import evaluate_model
    from catdog.settings import get_settings

    out = tmp_path_factory.mktemp("evaluation")
    history_file = served_model / HISTORY_JSON
    history = json.loads(history_file.read_text()) if history_file.is_file() else None
    metrics = evaluate_model(
        served_model, CATSDOGS, settings=get_settings(), plots_dir=out / PLOTS_DIR, history=history, progress=False
    )
    write_json(out / METRICS_JSON, metrics)
    return out


def install_metrics(model_dir: Path, evaluation: Path) -> None:
    """Give the served model its evaluation (the server reads metrics.json on every request)."""
    shutil.copytree(evaluation / "plots", model_dir / "plots", dirs_exist_ok=True)
    shutil.copyfile(evaluation / "metrics.json", model_dir / "metrics.json")


def registry_model_dir(server: Server, version: int) -> Path:
    """A registered version's model folder on this machine (the server's file:// artifact store).

    /api/status names the served model ("models:/catdog/1"), never its folder: tests look it up.
    """
    from catdog.registry import Registry
    from catdog.settings import Settings

    settings = Settings(
        state_dir=server.state_dir, models_dir=server.model_dir.parent, default_model=server.model_dir.name
    )
    return Registry(settings).local_model_dir(version)


def remove_metrics(model_dir: Path) -> None:
    (model_dir / "metrics.json").unlink(missing_ok=True)
    shutil.rmtree(model_dir / "plots", ignore_errors=True)


@pytest.fixture(scope="package")
def server(served_model: Path, evaluation: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`uvicorn --factory catdog.web.app:create_app` on a free port, ready to answer; stopped by pid."""
    install_metrics(served_model, evaluation)
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    env = {
        **os.environ,
        "CATDOG_STATE_DIR": str(root / "state"),
        "CATDOG_MODELS_DIR": str(served_model.parent),
        "CATDOG_DEFAULT_MODEL": served_model.name,
        "CATDOG_DATA_DIR": str(CATSDOGS),
        "CATDOG_PORT": str(port),
        "CATDOG_HOST": "127.0.0.1",
        "CATDOG_MAX_BATCH_SIZE": "4",
        "CATDOG_WARMUP_BATCH_SIZES": "1",
        "CATDOG_THREADS": "2",
        "CATDOG_DB_FLUSH_SECONDS": "0.1",
        "CATDOG_DRIFT_INTERVAL_SECONDS": "1",
        "CATDOG_DRIFT_WINDOW": "20",
        "CATDOG_DRIFT_MIN_SAMPLES": "10",
        "CATDOG_LOG_FORMAT": "text",
        "CATDOG_ADMIN_TOKEN": ADMIN_TOKEN,
        "CATDOG_REGISTRY_POLL_SECONDS": "0.5",
        "CATDOG_JOB_HEARTBEAT_SECONDS": "0.5",
        "CATDOG_RETRAIN_MIN_PER_CLASS": "5",  # the fixtures hold 6 test photos per class
    }
    log = root / "server.log"
    command = [sys.executable, "-m", "uvicorn", "--factory", "catdog.web.app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    running = Server(f"http://127.0.0.1:{port}", served_model, root / "state", log, process)
    worker: subprocess.Popen[bytes] | None = None
    try:
        _wait_ready(running)  # the server has migrated the database and registered the shipped model
        # the job consumer beside the server, as `catdog serve` starts it (retrains run there)
        with (root / "worker.log").open("wb") as out:
            command = [sys.executable, "-m", "catdog.cli", "worker"]
            worker = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
        yield running
    finally:
        if worker is not None:
            _stop(worker)
        _stop(process)


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            status, body = get_json(server.url + "/ready", timeout=2)
        except (OSError, ValueError):
            status, body = 0, None
        if status == 200:
            return
        if isinstance(body, dict) and body.get("phase") == "failed":
            raise RuntimeError(f"the model failed to load: {body}\n{server.log_tail()}")
        time.sleep(0.25)
    raise TimeoutError(f"the server was not ready within {READY_TIMEOUT:.0f} s:\n{server.log_tail()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (uvicorn and Huey shut down gracefully), then SIGKILL; only this process, by its pid."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="package")
def browser(chromium_path: Path) -> Iterator[Any]:
    # package scope, not session: Playwright's sync API holds an event loop that would break
    # asyncio.run() in the tests that come after this package
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Watch:
    """What a page did that it should not: console errors, exceptions, failed or foreign requests."""

    origin: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    error_responses: list[tuple[int, str]] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def on_request(self, request: Any) -> None:
        url = request.url
        self.requests.append(url)
        scheme = urlsplit(url).scheme
        if scheme in ("data", "blob"):
            if scheme == "blob" and not url.startswith("blob:" + self.origin + "/"):
                self.foreign_requests.append(url)
            return
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.foreign_requests.append(url)

    def on_response(self, response: Any) -> None:
        if response.status >= 400:
            self.error_responses.append((response.status, response.url))

    def on_console(self, message: Any) -> None:
        if message.type == "error":
            location = message.location or {}
            self.console_errors.append(f"{message.text} ({location.get('url', '?')})")

    def assert_clean(self, expected_errors: tuple[tuple[int, str], ...] = ()) -> None:
        """No problems, except answers listed as (status, path) and the console lines that report them.

        Chromium logs every 4xx/5xx answer as a console error "Failed to load resource"; an expected
        answer (the server's 415 for a text file) excuses exactly as many of those lines.
        """
        assert not self.page_errors, f"uncaught exceptions: {self.page_errors}"
        assert not self.failed_requests, f"failed requests: {self.failed_requests}"
        assert not self.foreign_requests, f"requests that leave the server: {self.foreign_requests}"
        unexpected = [
            (status, url)
            for status, url in self.error_responses
            if (status, urlsplit(url).path) not in set(expected_errors)
        ]
        assert not unexpected, f"unexpected error answers: {unexpected}"
        excused = len(self.error_responses) - len(unexpected)
        resource_lines = [e for e in self.console_errors if e.startswith("Failed to load resource")]
        other = [e for e in self.console_errors if not e.startswith("Failed to load resource")]
        assert not other, f"console errors: {other}"
        assert len(resource_lines) <= excused, f"console errors: {resource_lines}"


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh 1280x800 page; its Watch is `page.watch` (assert with page.watch.assert_clean())."""
    context = browser.new_context(viewport=VIEWPORT, base_url=server.url)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    watch = Watch(server.url)
    tab.on("request", watch.on_request)
    tab.on("console", watch.on_console)
    tab.on("pageerror", lambda exc: watch.page_errors.append(str(exc)))
    # ERR_ABORTED is the browser cancelling a page's pending requests when it navigates away
    # (a test clicking a link mid-refresh), not a failure of the server
    tab.on(
        "requestfailed",
        lambda r: None if r.failure == "net::ERR_ABORTED" else watch.failed_requests.append(f"{r.url} ({r.failure})"),
    )
    tab.on("response", watch.on_response)
    tab.watch = watch
    try:
        yield tab
    finally:
        context.close()


def sign_in(page: Any, token: str = ADMIN_TOKEN) -> None:
    """Enter the admin token through the footer's dialog; it is checked and kept for the tab."""
    from playwright.sync_api import expect

    page.locator("#admin-toggle").click()
    dialog = page.get_by_role("dialog", name="Admin token")
    expect(dialog).to_be_visible()
    page.get_by_label("Token", exact=True).fill(token)
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    expect(page.locator("#admin-state")).to_have_text("Admin: signed in for this tab")


@pytest.fixture(scope="package")
def save_screenshot() -> Callable[[Any, str], Path | None]:
    """save(page, "home.png"): write docs/screenshots/home.png if it is new or changed meaningfully."""
    return _save_screenshot


def _save_screenshot(page: Any, name: str) -> Path | None:
    import io

    from PIL import Image, ImageChops

    shot = Image.open(io.BytesIO(page.screenshot(full_page=False))).convert("RGB")
    target = SCREENSHOTS / name
    if target.exists() and os.environ.get("CATDOG_SCREENSHOTS") != "update":
        old = Image.open(target).convert("RGB")
        if old.size == shot.size:
            diff = ImageChops.difference(old, shot).convert("L").point(lambda v: 255 if v > 24 else 0)
            changed = sum(diff.histogram()[255:]) / (shot.width * shot.height)
            if changed <= SCREENSHOT_CHANGE:
                return None
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    small = shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(target, optimize=True)
    return target


# Text whose colour, over its composited background, falls below WCAG AA (4.5:1; 3:1 for large text).
# Disabled controls are exempt (WCAG 1.4.3), as are canvases (the charts carry their own labels).
LOW_CONTRAST_JS = """
() => {
    const parse = (c) => {
        const m = c.match(/rgba?\\(([^)]+)\\)/);
        if (!m) return null;
        const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
        return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
    };
    const over = (top, bottom) => ({
        r: top.r * top.a + bottom.r * (1 - top.a),
        g: top.g * top.a + bottom.g * (1 - top.a),
        b: top.b * top.a + bottom.b * (1 - top.a),
        a: 1,
    });
    const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    const luminance = (c) => 0.2126 * channel(c.r) + 0.7152 * channel(c.g) + 0.0722 * channel(c.b);
    const background = (el) => {
        const layers = [];
        for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
            const c = parse(getComputedStyle(node).backgroundColor);
            if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
        }
        let color = { r: 255, g: 255, b: 255, a: 1 };
        for (const layer of layers.reverse()) color = over(layer, color);
        return color;
    };
    const problems = [];
    for (const el of document.body.querySelectorAll("*")) {
        if (el.closest("canvas, option, [disabled], fieldset:disabled, .visually-hidden")) continue;
        const texts = Array.from(el.childNodes).filter((n) => n.nodeType === 3).map((n) => n.textContent);
        const text = texts.join("").trim();
        if (!text || el.getClientRects().length === 0) continue;
        const style = getComputedStyle(el);
        if (style.visibility === "hidden" || Number(style.opacity) === 0) continue;
        const bg = background(el);
        const fg = over(parse(style.color), bg);
        const [hi, lo] = [luminance(fg), luminance(bg)].sort((a, b) => b - a);
        const ratio = (hi + 0.05) / (lo + 0.05);
        const size = parseFloat(style.fontSize);
        const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
        if (ratio < (large ? 3 : 4.5)) problems.push(`${text.slice(0, 40)}: ${ratio.toFixed(2)}`);
    }
    return problems;
}
"""

# Form controls without an accessible name (label, aria-label or aria-labelledby).
UNLABELLED_JS = """
() => Array.from(document.querySelectorAll("input, select, textarea, button"))
    .filter((el) => el.type !== "hidden")
    .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
        && !el.getAttribute("aria-labelledby") && !(el.tagName === "BUTTON" && el.textContent.trim()))
    .map((el) => el.outerHTML.slice(0, 80))
"""

# What sticks out past the viewport's right edge (the page then scrolls sideways): every element
# and every run of text whose box ends right of it, unless a box that clips or scrolls it (a
# .table-wrap) holds it in; an absolutely positioned box escapes the scrollers between it and its
# containing block, as it does in the browser. Only the outermost offenders: an element whose
# parent sticks out too is left out. Each as "path (left..right px): text".
STICKING_OUT_JS = """
() => {
    const limit = document.documentElement.clientWidth + 0.5;
    const held = (start, fromItself) => {
        let mode = fromItself ? "static" : getComputedStyle(start).position;
        for (let p = fromItself ? start : start.parentElement; p && p !== document.body; p = p.parentElement) {
            const style = getComputedStyle(p);
            if (mode === "fixed") return false;
            if (mode === "absolute" && style.position === "static" && style.transform === "none") continue;
            if (style.overflowX !== "visible") return p.getBoundingClientRect().right <= limit;
            mode = style.position;
        }
        return false;
    };
    const path = (el) => {
        const parts = [];
        for (let n = el; n && n !== document.body; n = n.parentElement) {
            const tag = n.tagName.toLowerCase();
            if (n.id) { parts.unshift(`${tag}#${n.id}`); break; }
            parts.unshift(tag + Array.from(n.classList).map((c) => `.${c}`).join(""));
        }
        return parts.join(" > ");
    };
    const out = [];
    const outside = new Set();
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const text = node.nodeType === 3;
        const el = text ? node.parentElement : node;
        if (!el || el.getClientRects().length === 0 || (text && !node.textContent.trim())) continue;
        let rect = el.getBoundingClientRect();
        if (text) {
            const range = document.createRange();
            range.selectNodeContents(node);
            rect = range.getBoundingClientRect();
        }
        if (rect.right <= limit || (rect.width === 0 && rect.height === 0) || held(el, text)) continue;
        if (!text) outside.add(el);
        if (outside.has(text ? el : el.parentElement)) continue;
        const what = text ? `text in ${path(el)}` : path(el);
        const words = node.textContent.trim().replace(/\\s+/g, " ").slice(0, 60);
        out.push(`${what} (${Math.round(rect.left)}..${Math.round(rect.right)} px): ${words}`);
    }
    return out;
}
"""


def sticking_out(page: Any) -> list[str]:
    """What makes `page` scroll sideways (STICKING_OUT_JS): "path (left..right px): text" each; [] when it fits."""
    return list(page.evaluate(STICKING_OUT_JS))
