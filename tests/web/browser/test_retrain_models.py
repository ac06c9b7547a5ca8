"""The admin pages in a real browser against the real routes: the token dialog, uploads with
duplicates and deletion, a retraining job followed live to its registered version, the models
page's promote and rollback, the predict page's "wrong?" feedback, and the monitoring page's
per-version table. Saves the README's retrain.png and models.png.

The tests run in file order on the package's one server and build on each other's state
(uploads, then a retrain that registers a second version, then promote and rollback); this
module runs after test_pages.py, and the rollback test leaves production where it started.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from PIL import Image, ImageOps

from ...conftest import CATSDOGS
from .conftest import ADMIN_TOKEN, LOW_CONTRAST_JS, UNLABELLED_JS, Server, get_json, sign_in, sticking_out

pytestmark = pytest.mark.usefixtures("chromium_path")

RETRAIN_TIMEOUT_MS = 300_000  # the tiny Lite0 model on the fixtures retrains in well under a minute
TRAIN_CATS = sorted((CATSDOGS / "train" / "cats").iterdir())


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


@pytest.fixture(scope="module")
def new_cats(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two cat photos that are in neither split: mirrored training cats, saved as new JPEGs."""
    folder = tmp_path_factory.mktemp("new_cats")
    paths = []
    for i, source in enumerate(TRAIN_CATS[:2]):
        target = folder / f"new-cat-{i + 1}.jpg"
        ImageOps.mirror(Image.open(source).convert("RGB")).save(target, "JPEG", quality=92)
        paths.append(target)
    return paths


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def uploads(server: Server) -> dict[str, Any]:
    status, body = get_json(server.url + "/api/uploads?limit=200")
    assert status == 200, body
    return body


def models(server: Server) -> dict[str, Any]:
    status, body = get_json(server.url + "/api/models")
    assert status == 200, body
    return body


def confirm(page: Any, ok: bool = True) -> None:
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#confirm-cancel")).to_be_focused()  # the safe choice has the focus
    page.locator("#confirm-ok" if ok else "#confirm-cancel").click()
    expect(dialog).to_be_hidden()


# --- the admin token -------------------------------------------------------------------------------------
def test_token_dialog_refuses_a_wrong_token_and_keeps_the_right_one(page: Any) -> None:
    page.goto("/retrain-page")
    expect(page.locator("#admin-state")).to_have_text("Admin: not signed in")
    toggle = page.locator("#admin-toggle")
    toggle.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Admin token")
    expect(dialog).to_be_visible()
    field = page.get_by_label("Token", exact=True)
    expect(field).to_be_focused()
    assert page.evaluate(UNLABELLED_JS) == [], "form controls without a label"
    assert page.evaluate(LOW_CONTRAST_JS) == [], "text below WCAG AA contrast"

    field.fill("not-the-token")
    page.keyboard.press("Enter")
    error = page.locator("#token-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("refused this token (403)")
    expect(error).to_have_attribute("role", "alert")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(dialog).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('catdog-admin-token')") is None

    page.keyboard.press("Escape")  # closes without a token, focus back on the opener
    expect(dialog).to_be_hidden()
    expect(toggle).to_be_focused()
    assert page.evaluate("sessionStorage.getItem('catdog-admin-token')") is None

    sign_in(page)
    assert page.evaluate("sessionStorage.getItem('catdog-admin-token')") == ADMIN_TOKEN
    page.reload()  # kept for the tab's session: no second question
    expect(page.locator("#admin-state")).to_have_text("Admin: signed in for this tab")
    page.locator("#admin-toggle").click()  # forget it
    expect(page.locator("#admin-state")).to_have_text("Admin: not signed in")
    assert page.evaluate("sessionStorage.getItem('catdog-admin-token')") is None
    page.watch.assert_clean(expected_errors=((403, "/api/auth/check"),))


# --- uploads ---------------------------------------------------------------------------------------------
def test_upload_two_cats_see_them_listed_a_duplicate_reported_and_delete_one(
    page: Any, server: Server, new_cats: list[Path]
) -> None:
    before = uploads(server)
    known = {u["sha256"] for u in before["uploads"]}
    hashes = [sha256(p) for p in new_cats]
    assert not known & set(hashes), "the new photos were uploaded before this test"
    page.goto("/retrain-page")
    expect(page.locator("#uploads-total")).to_have_text(f"{before['total']:,}")
    # a stale token in the tab: the server's 403 clears it and the dialog says why
    page.evaluate("sessionStorage.setItem('catdog-admin-token', 'stale-token')")
    expect(page.get_by_role("button", name="Upload files")).to_be_disabled()
    page.get_by_label("Cats", exact=True).check()
    page.get_by_label("Images", exact=True).set_input_files([str(p) for p in new_cats])
    upload = page.get_by_role("button", name="Upload 2 files")
    expect(upload).to_be_enabled()
    upload.click()
    dialog = page.get_by_role("dialog", name="Admin token")
    expect(dialog).to_be_visible()
    expect(page.locator("#token-error")).to_contain_text("refused the admin token (403)")
    page.get_by_label("Token", exact=True).fill(ADMIN_TOKEN)
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()

    result = page.locator("#upload-result")
    expect(result).to_be_visible()
    expect(page.locator("#upload-stored")).to_have_text("2")
    expect(page.locator("#upload-duplicates")).to_have_text("0")
    expect(page.locator("#upload-errors")).to_have_text("0")
    stored = page.locator('#upload-outcomes li[data-status="stored"]')
    expect(stored).to_have_count(2)
    for path in new_cats:
        expect(stored.filter(has_text=path.name)).to_have_count(1)
    request = page.locator("#upload-requests li")
    expect(request).to_have_count(1)
    expect(request).to_have_attribute("data-state", "done")
    assert request.locator("progress").evaluate("p => p.value") == 100
    expect(page.locator("#upload-status")).to_contain_text("2 files stored as cats")
    expect(page.locator("#upload-status")).to_have_attribute("aria-live", "polite")

    after = uploads(server)
    assert after["total"] == before["total"] + 2
    listed = {u["sha256"]: u for u in after["uploads"]}
    for digest, path in zip(hashes, new_cats, strict=True):
        assert listed[digest]["class"] == "cats"
        thumb = page.locator(f"#upload-{digest}")
        expect(thumb).to_be_visible()
        expect(thumb).to_contain_text(path.name)
        img = thumb.locator("img")
        expect(img).to_have_attribute("alt", re.compile("cat"))
        img.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    expect(page.locator("#uploads-cats")).to_have_text(f"{before_cats(before) + 2:,}")
    expect(page.locator("#uploads-count")).to_contain_text(f"of {after['total']} upload")

    # the same photo again: reported as a duplicate, stored once
    page.get_by_label("Images", exact=True).set_input_files(str(new_cats[0]))
    page.get_by_role("button", name="Upload files").click()
    expect(page.locator("#upload-duplicates")).to_have_text("1")
    expect(page.locator("#upload-stored")).to_have_text("0")
    duplicate = page.locator('#upload-outcomes li[data-status="duplicate"]')
    expect(duplicate).to_have_count(1)
    expect(duplicate).to_contain_text(new_cats[0].name)
    expect(duplicate).to_contain_text("uploaded before")
    assert uploads(server)["total"] == after["total"]

    # delete the second one: confirmed first, gone from the list and from the server
    page.get_by_role("button", name=f"Delete {new_cats[1].name} (cat)").click()
    confirm(page)
    expect(page.locator(f"#upload-{hashes[1]}")).to_have_count(0)
    expect(page.locator("#upload-status")).to_contain_text(f"Deleted {new_cats[1].name}")
    remaining = uploads(server)
    assert remaining["total"] == after["total"] - 1
    assert hashes[1] not in {u["sha256"] for u in remaining["uploads"]}
    assert hashes[0] in {u["sha256"] for u in remaining["uploads"]}
    expect(page.locator("#uploads-cats")).to_have_text(f"{before_cats(before) + 1:,}")
    page.watch.assert_clean(expected_errors=((403, "/api/upload-training-data"),))


def before_cats(listing: dict[str, Any]) -> int:
    return sum(1 for u in listing["uploads"] if u["class"] == "cats")


def test_uploading_without_a_token_does_nothing(page: Any, server: Server, new_cats: list[Path]) -> None:
    total = uploads(server)["total"]
    page.goto("/retrain-page")
    page.get_by_label("Images", exact=True).set_input_files(str(new_cats[1]))
    page.get_by_role("button", name="Upload files").click()
    expect(page.get_by_role("dialog", name="Admin token")).to_be_visible()
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#upload-status")).to_contain_text("no admin token was given")
    expect(page.locator('#upload-outcomes li[data-status="error"]')).to_have_count(1)
    assert uploads(server)["total"] == total
    page.watch.assert_clean()


# --- retraining ------------------------------------------------------------------------------------------
def test_retrain_runs_live_and_registers_a_version(
    page: Any, server: Server, save_screenshot: Callable[[Any, str], Path | None]
) -> None:
    versions_before = {v["version"] for v in models(server)["versions"]}
    _, status_before = get_json(server.url + "/api/retrain-status")
    assert not status_before["is_retraining"], status_before
    page.goto("/retrain-page")
    sign_in(page)
    # every phase the page shows, and how often it polls while the job runs
    page.evaluate(
        """() => {
            window.seen = { phases: [], notes: [] };
            const watch = (id, list) => new MutationObserver(() => {
                const text = document.getElementById(id).textContent;
                if (list[list.length - 1] !== text) list.push(text);
            }).observe(document.getElementById(id), { childList: true, characterData: true, subtree: true });
            watch("retrain-phase", window.seen.phases);
            watch("retrain-updated", window.seen.notes);
        }"""
    )
    start = page.get_by_role("button", name="Start retraining")
    expect(start).to_be_enabled()
    start.click()
    expect(page.locator("#retrain-progress-box")).to_be_visible()
    expect(page.locator("#retrain-progress-label")).to_have_text("Retraining progress")

    result = page.locator("#retrain-result")
    expect(result).to_be_visible(timeout=RETRAIN_TIMEOUT_MS)
    _, status = get_json(server.url + "/api/retrain-status")
    assert status["status"] == "succeeded", status
    expect(result).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#retrain-phase")).to_have_text("done")
    assert page.locator("#retrain-progress").evaluate("p => p.value") == 100
    expect(page.locator("#retrain-result-summary")).to_contain_text(f"registered model version {status['version']}")
    expect(page.locator("#retrain-accuracy")).to_have_text(f"{status['metrics']['accuracy'] * 100:.2f}%")
    expect(page.locator("#retrain-roc-auc")).to_have_text(f"{status['metrics']['roc_auc']:.4f}")
    gate = page.locator("#retrain-gate")
    expect(gate).to_be_visible()
    expect(gate).to_contain_text("promoted to production" if status["gate"]["promoted"] else "kept as staging")
    expect(page.locator("#retrain-live")).to_contain_text(f"Retraining finished: version {status['version']}")
    expect(page.locator("#retrain-running")).to_have_text("no")
    expect(page.locator("#retrain-cancel")).to_be_hidden()
    expect(page.locator("#retrain-button")).to_be_enabled()
    seen = page.evaluate("window.seen")
    running = [p for p in seen["phases"] if re.match(r"queued|extracting|training|evaluating|registering", p)]
    assert running, f"the page never showed the job running: {seen}"
    assert any("every 2 s" in note for note in seen["notes"]), f"no 2 s polling while the job ran: {seen}"
    row = page.locator(f'#jobs-rows tr[data-job-id="{status["job_id"]}"]')
    expect(row).to_have_attribute("data-status", "succeeded")
    expect(row).to_contain_text(str(status["version"]))
    assert status["version"] not in versions_before
    assert status["version"] in {v["version"] for v in models(server)["versions"]}

    page.evaluate("window.scrollTo(0, 0)")
    save_screenshot(page, "retrain.png")
    page.watch.assert_clean()


def test_quarantined_uploads_are_shown_with_their_reason_and_an_admin_keeps_or_deletes_them(
    page: Any, server: Server, tmp_path: Path, save_screenshot: Callable[[Any, str], Path | None]
) -> None:
    """Two uploads marked quarantined as a label check marks them: P(class), the reason, Keep, Delete."""
    import sqlite3

    photos = []
    for i, source in enumerate(TRAIN_CATS[2:4]):
        target = tmp_path / f"doubtful-cat-{i + 1}.jpg"
        ImageOps.mirror(Image.open(source).convert("RGB")).save(target, "JPEG", quality=90)
        photos.append(target)
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        answer = client.post(
            "/api/upload-training-data?class_name=cats", files=files, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    assert answer.status_code == 200 and answer.json()["uploaded"] == 2, answer.text
    hashes = [entry["sha256"] for entry in answer.json()["files"]]
    reason = "label looks wrong: uploaded as cat, but heads that never saw it give P(cat) = 0.031 (test)"
    with sqlite3.connect(server.state_dir / "catdog.sqlite") as db:  # what a retrain's label check writes
        db.executemany(
            "UPDATE uploads SET quarantined = 1, quarantine_reason = ?, label_p = 0.031 WHERE sha256 = ?",
            [(reason, sha) for sha in hashes],
        )
    page.goto("/retrain-page")
    sign_in(page)
    items = page.locator("#quarantine-list li")
    expect(items).to_have_count(2)
    first = page.locator(f"#quarantined-{hashes[0]}")
    expect(first).to_contain_text("uploaded as cat · P(cat) 0.031")
    expect(first).to_contain_text("heads that never saw it")
    expect(page.locator("#quarantine-count")).to_contain_text("2 quarantined: not trained on")
    expect(page.locator(f"#upload-{hashes[0]}")).to_contain_text("quarantined")
    expect(page.locator("#label-check-summary")).to_contain_text(re.compile("Last label check|No retrain"))
    page.locator("#quarantine-title").evaluate("e => window.scrollTo(0, e.getBoundingClientRect().top + scrollY - 24)")
    save_screenshot(page, "quarantine.png")

    first.get_by_role("button", name=re.compile("^Keep")).click()
    expect(first).to_have_count(0)
    expect(page.locator("#quarantine-count")).to_contain_text("Kept")
    listed = {u["sha256"]: u for u in uploads(server)["uploads"]}
    assert listed[hashes[0]]["kept_by_admin"] and not listed[hashes[0]]["quarantined"]
    expect(page.locator(f"#upload-{hashes[0]}")).to_contain_text("kept by an admin")

    second = page.locator(f"#quarantined-{hashes[1]}")
    second.get_by_role("button", name=re.compile("^Delete")).click()
    confirm(page)
    expect(second).to_have_count(0)
    assert hashes[1] not in {u["sha256"] for u in uploads(server)["uploads"]}
    expect(page.locator("#quarantine-count")).to_contain_text("No upload is quarantined")
    page.watch.assert_clean()


def test_retrain_refusals_are_shown(page: Any, server: Server) -> None:
    """Start twice quickly: the second answer is the server's 409, shown as it said it; then cancel the job."""
    page.goto("/retrain-page")
    sign_in(page)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        first = client.post("/api/retrain", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, json={})
        assert first.status_code == 202, first.text
        job_id = first.json()["job_id"]
        # the page's button is disabled while a job runs; a stale page still sends the request
        page.evaluate("document.getElementById('retrain-button').disabled = false")
        page.locator("#retrain-button").click()
        message = page.locator("#retrain-message")
        expect(message).to_be_visible()
        expect(message).to_contain_text("already queued or running")
        expect(page.locator("#retrain-cancel")).to_be_visible()
        page.locator("#retrain-cancel").click()
        with page.expect_response(lambda r: r.url.endswith(f"/api/retrain/{job_id}/cancel")) as answer:
            confirm(page)
        _, status = get_json(server.url + "/api/retrain-status")
        assert status["job_id"] == job_id, status
        # a tiny job may finish before the cancel arrives (the server answers 409, the page says so)
        if answer.value.status == 409:
            expect(page.locator("#retrain-message")).to_contain_text("already finished")
        else:
            assert answer.value.status == 200, answer.value.status
            assert status["cancel_requested"] or status["status"] in ("cancelled", "succeeded"), status
        expect(page.locator("#retrain-result")).to_have_attribute(
            "data-status", re.compile("cancelled|succeeded"), timeout=RETRAIN_TIMEOUT_MS
        )
        if page.locator("#retrain-result").get_attribute("data-status") == "cancelled":
            expect(page.locator("#retrain-result-summary")).to_contain_text("was cancelled")
    cancel_path = f"/api/retrain/{job_id}/cancel"
    page.watch.assert_clean(expected_errors=((409, "/api/retrain"), (409, cancel_path)))


# --- models ----------------------------------------------------------------------------------------------
def test_models_page_lists_versions_and_promote_and_rollback_move_the_production_badge(
    page: Any, server: Server, save_screenshot: Callable[[Any, str], Path | None]
) -> None:
    registry = models(server)
    versions = registry["versions"]
    assert len(versions) >= 2, f"the retrain test should have registered a second version: {registry}"
    original = registry["production"]
    page.goto("/models-page")
    rows = page.locator("#models-rows tr[data-version]")
    expect(rows).to_have_count(len(versions))
    for v in versions:
        row = page.locator(f"#model-row-{v['version']}")
        expect(row).to_contain_text(f"v{v['version']}")
        expect(row).to_contain_text(v["model_version"])
        if v["metrics"].get("accuracy") is not None:
            expect(row).to_contain_text(f"{v['metrics']['accuracy'] * 100:.2f}%")
        for alias in v["aliases"]:
            expect(row.locator(f'[data-alias="{alias}"]')).to_be_visible()
        # the promotion gate's checks, each with its state and figures
        checks = v["gate"].get("checks") or []
        expect(row.locator(".gate-check")).to_have_count(len(checks))
        for check in checks:
            item = row.locator(f'.gate-check[data-check="{check["name"]}"]')
            state = "skipped" if check["skipped"] else "passed" if check["passed"] else "failed"
            expect(item).to_have_attribute("data-state", state)
            if check["name"] == "floor":
                expect(item).to_contain_text(f"{check['accuracy'] * 100:.2f}%")
            if check["name"] == "mcnemar" and not check["skipped"]:
                expect(item).to_contain_text(f"b {check['b']}, c {check['c']}")
    assert any(v["gate"].get("checks") for v in versions), "the retrained version has no gate checks"
    reference = registry["reference"]
    expect(page.locator("#gate-reference")).to_contain_text(f"version {reference['version']} ({reference['source']})")
    expect(page.locator(f"#model-row-{reference['version']} [data-reference]")).to_be_visible()
    production_badges = page.locator('#models-rows [data-alias="production"]')
    expect(production_badges).to_have_count(1)
    expect(page.locator(f'#model-row-{original} [data-alias="production"]')).to_be_visible()
    expect(page.locator(f'#model-row-{original} [data-served="production"]')).to_be_visible(timeout=15_000)
    expect(page.locator("#alias-production")).to_contain_text(f"version {original}")
    expect(page.locator("#served-production")).to_contain_text(f"version {original}")

    # two versions' plots side by side
    target = next(v["version"] for v in versions if v["version"] != original)
    page.select_option("#compare-a", str(original))
    page.select_option("#compare-b", str(target))
    figures = page.locator("#compare-plots figure img")
    plots = sum(len(v.get("plots") or {}) for v in versions if v["version"] in (original, target))
    expect(figures).to_have_count(plots)
    assert plots >= 2, "the versions have no plots to compare"
    for i in range(figures.count()):
        figures.nth(i).scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=figures.nth(i).element_handle())
    expect(page.locator("#compare-a-title")).to_contain_text(f"Version {original}")
    expect(page.locator("#compare-b-title")).to_contain_text(f"Version {target}")

    page.locator("#versions-title").evaluate(
        "e => window.scrollTo(0, e.getBoundingClientRect().top + window.scrollY - 24)"
    )
    save_screenshot(page, "models.png")

    sign_in(page)
    promote = page.get_by_role("button", name=f"Promote version {target} to production")
    promote.click()
    confirm(page, ok=False)  # cancelled: nothing changes
    assert models(server)["production"] == original
    promote.click()
    confirm(page)
    expect(page.locator("#models-result")).to_contain_text(f"Promoted: production is now version {target}")
    assert models(server)["production"] == target
    expect(page.locator(f'#model-row-{target} [data-alias="production"]')).to_be_visible()
    expect(page.locator(f'#model-row-{original} [data-alias="production"]')).to_have_count(0)
    expect(production_badges).to_have_count(1)
    expect(page.locator(f'#model-row-{target} [data-served="production"]')).to_be_visible(timeout=20_000)
    _, status = get_json(server.url + "/api/status")
    served_target = next(v for v in versions if v["version"] == target)
    assert status["model_version"] == served_target["model_version"]

    page.get_by_role("button", name="Roll back production").click()
    confirm(page)
    expect(page.locator("#models-result")).to_contain_text(
        f"Rolled back: production is now version {original} (was version {target})"
    )
    assert models(server)["production"] == original
    expect(page.locator(f'#model-row-{original} [data-alias="production"]')).to_be_visible()
    expect(page.locator(f'#model-row-{target} [data-alias="production"]')).to_have_count(0)
    expect(page.locator(f'#model-row-{original} [data-served="production"]')).to_be_visible(timeout=20_000)
    page.watch.assert_clean()


# --- feedback --------------------------------------------------------------------------------------------
def test_wrong_button_records_feedback_and_an_admin_adds_the_photo_to_training(
    page: Any, server: Server, tmp_path: Path
) -> None:
    photo = tmp_path / "new-cat.jpg"  # a photo new to the platform: a base-set one would be a label conflict
    ImageOps.mirror(Image.open(TRAIN_CATS[3]).convert("RGB")).save(photo, "JPEG", quality=90)
    page.goto("/predict-page")
    page.set_input_files("#file-input", str(photo))
    page.click("#predict-button")
    card = page.locator('#results .result-card[data-state="done"]')
    expect(card).to_have_count(1)
    predicted = card.get_attribute("data-predicted-class")
    other = "dog" if predicted == "cat" else "cat"
    model_version = card.locator(".result-model").inner_text().split(" ")[0]
    _, monitoring = get_json(server.url + "/api/monitoring?minutes=60")
    feedback_before = sum(v["feedback"]["n"] for v in monitoring["versions"] if v["model_version"] == model_version)

    wrong = card.get_by_role("button", name=re.compile(rf"^Wrong\? Report .* as a {other}"))
    expect(wrong).to_have_text(f"Wrong? It is a {other}")
    expect(card.locator(".result-add-training")).to_be_hidden()  # not an admin yet
    page.wait_for_timeout(500)  # the prediction's record reaches the database (flushed every 0.1 s)
    wrong.click()
    status = card.locator(".result-feedback-status")
    expect(status).to_contain_text(f"Recorded: it is a {other}")
    expect(card).to_have_attribute("data-feedback", "recorded")
    expect(wrong).to_be_disabled()
    expect(page.locator("#predict-status")).to_contain_text("feedback recorded")
    _, monitoring = get_json(server.url + "/api/monitoring?minutes=60")
    row = next(v for v in monitoring["versions"] if v["model_version"] == model_version)
    assert row["feedback"]["n"] == feedback_before + 1
    assert row["feedback"]["accuracy"] is not None

    total = uploads(server)["total"]
    sign_in(page)
    add = card.get_by_role("button", name=re.compile(rf"Add .* to the training data as a {other}"))
    expect(add).to_be_visible()
    add.click()
    expect(status).to_contain_text(f"Added to the training uploads as {other}s")
    expect(card).to_have_attribute("data-training", re.compile("stored|duplicate"))
    listing = uploads(server)
    assert listing["total"] == total + (1 if card.get_attribute("data-training") == "stored" else 0)
    assert any(u["source"] == "feedback" and u["class"] == f"{other}s" for u in listing["uploads"])

    # the monitoring page compares the versions, live accuracy included
    page.goto("/monitoring")
    version_row = page.locator(f'#versions-rows tr[data-model-version="{model_version}"]')
    expect(version_row).to_be_visible()
    expect(version_row).to_contain_text(re.compile(r"\d+(\.\d)?% \(\d+ of \d+ right\)"))
    if row["registry_version"] is not None:
        expect(version_row).to_contain_text(f"v{row['registry_version']}")
    page.watch.assert_clean()


# --- every admin page with content, at 375 px too ----------------------------------------------------------
@pytest.mark.parametrize("path", ["/retrain-page", "/models-page", "/monitoring"])
def test_admin_pages_with_content_stay_clean_and_fit_375_px(browser: Any, server: Server, path: str) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, base_url=server.url)
    try:
        tab = context.new_page()
        errors: list[str] = []
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.goto(path)
        tab.wait_for_load_state("networkidle")
        if path == "/retrain-page":
            expect(tab.locator("#uploads-list li").first).to_be_visible()
            expect(tab.locator("#jobs-rows tr[data-job-id]").first).to_be_visible()
        elif path == "/models-page":
            expect(tab.locator("#models-rows tr[data-version]").nth(1)).to_be_visible()
            expect(tab.locator("#compare-plots figure").first).to_be_visible()
        else:
            expect(tab.locator("#versions-rows tr[data-model-version]").first).to_be_visible()
        overflow = tab.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow} px at 375 px: {sticking_out(tab)}"
        assert tab.evaluate(UNLABELLED_JS) == [], "form controls without a label"
        assert tab.evaluate(LOW_CONTRAST_JS) == [], "text below WCAG AA contrast"
        assert errors == [], errors
    finally:
        context.close()


# Long unbreakable text as the server may send it: a path in an error (the feature cache's
# "ImageDecodeError: cannot read <path>" made CI's retrain page scroll sideways by 459 px),
# digests, a camera's file name.
DIGEST = hashlib.sha256(b"catdog worst case").hexdigest()
LONG_PATH = f"/home/runner/work/catdog/catdog/state/uploads/cats/{DIGEST}/{DIGEST}.jpg"
LONG_NAME = f"IMG_20240101_{DIGEST}{DIGEST}.jpg"


def worst_case_status(real: dict[str, Any], variant: str) -> dict[str, Any]:
    """A /api/retrain-status answer built on the real one, every text the page shows made long."""
    s = dict(real)
    s.update(
        job_id=real.get("job_id") or DIGEST,
        version=real.get("version") or 2,
        metrics=real.get("metrics") or {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "roc_auc": 0.5},
        started_at=real.get("started_at") or real.get("timestamp"),
        finished_at=real.get("finished_at") or real.get("timestamp"),
        last_retrain=real.get("last_retrain") or real.get("timestamp"),
        cancel_requested=False,
        is_retraining=False,
        label_check={
            "enabled": True,
            "checked": 12345,
            "quarantined": 1,
            "kept": 1,
            "trained": 12343,
            "skipped": f"no photo of {LONG_PATH}",
            "base_issues": {
                "count": 3,
                "examples": [{"file": f"train/cats/{LONG_NAME}", "class": "cats", "p_label": 0.01}] * 3,
            },
        },
    )
    if variant == "succeeded":
        s.update(status="succeeded", phase="done", error=None, gate={"promoted": False, "reason": LONG_PATH})
        s["feature_cache"] = {"state": "error", "error": f"ImageDecodeError: cannot read {LONG_PATH}: no such file"}
    elif variant == "running":
        s.update(status="running", phase=f"extracting_{DIGEST}", phase_detail=LONG_PATH, is_retraining=True)
        s.update(percent=42.0, eta_seconds=1234567, gate=None)
        s["feature_cache"] = {"state": "paused", "done": 123456, "total": 9876543, "reason": LONG_PATH}
    else:
        s.update(status="failed", phase="failed", error=f"FileNotFoundError: {LONG_PATH}", gate=None)
        s["feature_cache"] = {"state": "off", "reason": f"no data set to warm: {LONG_PATH}"}
        s["label_check"] = {"enabled": False, "reason": LONG_PATH}
    return s


def worst_case_jobs(real: dict[str, Any]) -> dict[str, Any]:
    """The real job history with a failed, a refused and a running job whose texts are long."""
    template = (real.get("jobs") or [{}])[0]
    extra = [
        {**template, "job_id": f"{DIGEST}-1", "status": "failed", "error": f"RuntimeError: {LONG_PATH}"},
        {
            **template,
            "job_id": f"{DIGEST}-2",
            "status": "succeeded",
            "version": 123456,
            "gate": {"promoted": False, "reason": f"kept as staging: {LONG_PATH}"},
        },
        {**template, "job_id": f"{DIGEST}-3", "status": "running", "phase_detail": LONG_PATH},
    ]
    return {**real, "jobs": [*extra, *real.get("jobs", [])]}


def test_the_retrain_page_fits_375_px_with_worst_case_content(page: Any, server: Server, tmp_path: Path) -> None:
    """A photo uploaded under a long file name and quarantined with a long reason, through the real
    routes, and every other text the page shows (job errors, gate reasons, the feature cache's line,
    the label check's summary, base-set paths, the served version) made long in the server's real
    answers: nothing sticks out past 375 px in any job state (the offending elements are named)."""
    import sqlite3

    from playwright.sync_api import Error as PlaywrightError

    photo = tmp_path / LONG_NAME
    ImageOps.mirror(Image.open(TRAIN_CATS[5]).convert("RGB")).save(photo, "JPEG", quality=87)
    digest = sha256(photo)
    variant = {"name": "succeeded"}

    def answer(route: Any, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        try:
            response = route.fetch()
            route.fulfill(response=response, json=change(response.json()))
        except PlaywrightError:  # the page went on to the next state meanwhile: its request was dropped
            pass

    page.route("**/api/retrain-status", lambda route: answer(route, lambda b: worst_case_status(b, variant["name"])))
    page.route("**/api/retrain/jobs?*", lambda route: answer(route, worst_case_jobs))
    page.route(
        "**/api/status",
        lambda route: answer(route, lambda b: {**b, "model_version": f"{b['model_version']}-{DIGEST}{DIGEST}"}),
    )

    def fits(when: str) -> None:
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        out = sticking_out(page)
        assert overflow <= 0 and not out, f"{when}: the page scrolls sideways by {overflow} px at 375 px: {out}"

    page.set_viewport_size({"width": 375, "height": 740})
    try:
        page.goto("/retrain-page")
        sign_in(page)
        page.get_by_label("Images", exact=True).set_input_files(str(photo))
        page.get_by_role("button", name="Upload files").click()
        expect(page.locator("#upload-stored")).to_have_text("1")
        expect(page.locator("#upload-outcomes")).to_contain_text(LONG_NAME)
        expect(page.locator(f"#upload-{digest}")).to_be_visible()
        fits("after the upload")

        reason = f"label looks wrong: {LONG_PATH}"
        with sqlite3.connect(server.state_dir / "catdog.sqlite") as db:  # what a retrain's label check writes
            db.execute(
                "UPDATE uploads SET quarantined = 1, quarantine_reason = ?, label_p = 0.031 WHERE sha256 = ?",
                (reason, digest),
            )
        for name in ("succeeded", "running", "failed"):
            variant["name"] = name
            page.goto("/retrain-page")
            expect(page.locator(f"#quarantined-{digest}")).to_contain_text(reason)
            expect(page.locator("#jobs-rows")).to_contain_text(LONG_PATH)
            expect(page.locator("#footer-model-version")).to_contain_text(DIGEST)
            if name == "succeeded":
                expect(page.locator("#retrain-gate")).to_contain_text(LONG_PATH)
                expect(page.locator("#retrain-cache-detail")).to_contain_text(f"cannot read {LONG_PATH}")
                page.locator("#base-issues summary").click()
                expect(page.locator("#base-issues-list")).to_contain_text(LONG_NAME)
            elif name == "running":
                expect(page.locator("#retrain-progress-text")).to_contain_text(LONG_PATH)
                expect(page.locator("#retrain-cache-detail")).to_have_text(LONG_PATH)
            else:
                expect(page.locator("#retrain-result-summary")).to_contain_text(LONG_PATH)
                expect(page.locator("#label-check-summary")).to_contain_text(LONG_PATH)
            fits(f"a {name} job")

        # the admin deletes it: the confirmation and the status line name it, and fit too
        page.get_by_role("button", name=f"Delete {LONG_NAME} (cat)").click()
        expect(page.locator("#confirm-dialog-text")).to_contain_text(LONG_NAME)
        fits("the confirmation")
        confirm(page)
        expect(page.locator("#upload-status")).to_contain_text(f"Deleted {LONG_NAME}")
        fits("after the deletion")
    finally:
        httpx.delete(f"{server.url}/api/uploads/{digest}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert digest not in {u["sha256"] for u in uploads(server)["uploads"]}
    page.watch.assert_clean()


def test_the_dialogs_work_from_the_keyboard(page: Any, server: Server) -> None:
    """Tab to Promote, Enter opens the confirmation with Cancel focused, Escape closes it; nothing changes."""
    production = models(server)["production"]
    page.goto("/models-page")
    sign_in(page)
    expect(page.locator("#models-rows .promote-button:enabled").first).to_be_visible()
    for _ in range(80):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('promote-button')"):
            break
    else:
        raise AssertionError("Tab never reached a Promote button")
    page.keyboard.press("Enter")
    expect(page.locator("#confirm-dialog")).to_be_visible()
    expect(page.locator("#confirm-cancel")).to_be_focused()
    assert page.evaluate(LOW_CONTRAST_JS) == [], "text below WCAG AA contrast"
    page.keyboard.press("Escape")
    expect(page.locator("#confirm-dialog")).to_be_hidden()
    assert page.evaluate("document.activeElement.classList.contains('promote-button')")
    assert models(server)["production"] == production
    page.watch.assert_clean()


def test_a_promoted_version_that_cannot_load_is_shown_with_its_reason(
    page: Any, server: Server, tmp_path: Path
) -> None:
    """The page names the failure (version, reason, time) and stops saying "switching"; the old version serves."""
    import shutil

    from catdog.registry import Registry, training_dataset
    from catdog.settings import Settings

    settings = Settings(
        state_dir=server.state_dir, models_dir=server.model_dir.parent, default_model=server.model_dir.name
    )
    registry = Registry(settings)
    original = registry.aliases()["production"]
    model = Path(shutil.copytree(server.model_dir, tmp_path / "broken"))
    (model / "head.npz").write_bytes((model / "head.npz").read_bytes() + b"\0")  # another content id
    info = registry.log_training_run(
        model,
        source="train",
        params={},
        history=[],
        test_metrics={"accuracy": 0.5, "n": 12},
        dataset=training_dataset({"fingerprint": "ef" * 32, "counts": {}}, "broken"),
    )
    (registry.local_model_dir(info.version) / "model.onnx").write_bytes(b"not an ONNX graph")
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        promoted = httpx.post(f"{server.url}/api/models/{info.version}/promote", headers=headers, timeout=30)
        assert promoted.status_code == 200, promoted.text
        page.goto("/models-page")
        served = page.locator("#served-production")
        expect(served).to_contain_text(f"version {info.version} failed to load", timeout=20_000)
        expect(served).to_contain_text(f"version {original}")
        expect(served).not_to_contain_text("switching")
        notice = page.locator("#swap-error")
        expect(notice).to_be_visible()
        expect(notice).to_contain_text(f"Version {info.version} (production) failed to load")
        expect(notice).to_contain_text("INVALID_PROTOBUF")
        expect(page.locator(f'#model-row-{info.version} [data-load-error="{info.version}"]')).to_be_visible()
        expect(page.locator(f'#model-row-{original} [data-served="production"]')).to_be_visible()
    finally:
        back = httpx.post(f"{server.url}/api/models/{original}/promote", headers=headers, timeout=30)
        assert back.status_code == 200, back.text
    expect(page.locator("#swap-error")).to_be_hidden(timeout=20_000)
    page.watch.assert_clean()
