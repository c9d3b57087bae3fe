"""A real browser (headless Chromium via Playwright) labels a round with keyboard shortcuts, undo included."""

from __future__ import annotations

import io
import shutil
import zipfile

import pytest
from labfix import fill, free_port

from labeler.app import serve
from labeler.store import Store

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_keyboard_labelling_round(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    store = Store(tmp_path / "labels.sqlite")
    fill(store, 4, k=2)
    fill(store, 1, k=3, seed=1)
    demo, url = serve(store, port=free_port(), block=False, quiet=True)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(url)
            page.fill("#vr-name textarea, #vr-name input", "kim")
            page.click("#vr-start")
            token = "#vr-view .vr-cmp"
            page.wait_for_selector(token)

            def current() -> str:
                return page.get_attribute(token, "data-comparison") + ":" + page.get_attribute(token, "data-token")

            def press(key: str, changes: bool = True) -> str:
                before = current()
                page.keyboard.press(key)
                if changes:
                    page.wait_for_function(
                        "b => { const e = document.querySelector('#vr-view .vr-cmp');"
                        " return e && (e.dataset.comparison + ':' + e.dataset.token) !== b; }", arg=before)
                else:
                    page.wait_for_function("() => document.querySelector('#vr-view').innerText.includes('Ranking: C')")
                return current()

            assert current().startswith("1:")
            assert "A better [1]" in page.inner_text("#vr-a") and page.is_visible("#vr-undo")
            assert press("1").startswith("2:")  # A better
            press("2")  # B better on comparison 2 ...
            assert press("u").startswith("2:")  # ... undone: comparison 2 is back
            assert press("3").startswith("3:")  # tie
            assert press("0").startswith("4:")  # both bad
            assert press("s").startswith("5:")  # skip; comparison 5 is a 3-way ranking
            assert page.is_visible("#vr-rank-C") and not page.is_visible("#vr-a")
            press("3", changes=False)  # C first ...
            page.keyboard.press("1")  # ... then A: B is last, and the ranking is submitted
            page.wait_for_function("() => document.querySelector('#vr-view').innerText.includes('All done')")
            assert "5 labelled" in page.inner_text("#vr-progress")
            page.get_by_role("tab", name="Stats").click()
            page.click("#vr-refresh")
            page.wait_for_function("() => document.querySelector('#vr-summary').innerText.includes('standing votes')")
            assert "5" in page.inner_text("#vr-summary")
            with page.expect_download() as download:
                page.click("#vr-export")
            names = zipfile.ZipFile(download.value.path()).namelist()
            assert "captioning/audit.jsonl" in names and "captioning/dataset_info.json" in names
            browser.close()
    finally:
        demo.close()

    votes = store.votes()
    assert [(v["comparison_id"], v["choice"], bool(v["retracted_at"])) for v in votes] == [
        (1, "a", False), (2, "b", True), (2, "tie", False), (3, "both_bad", False), (4, "skip", False),
        (5, "rank", False)]
    shown = votes[-1]["shown"]
    assert votes[-1]["ranking"] == [shown[2], shown[0], shown[1]]
    assert all(v["annotator"] == "kim" for v in votes) and store.counts()["retractions"] == 1


def test_export_from_the_page_leaves_no_files_behind(tmp_path, monkeypatch):
    """Export on the Stats tab: the zip is served once and deleted as it is served; one never fetched is deleted
    when its time is up (here 2 s; 10 minutes by default); our build folders are gone as soon as the zip exists."""
    import secrets
    import tempfile
    import time

    import httpx
    from labfix import ui_event, ui_fns

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # ours and Gradio's cache: only this test's
    (tmp_path / "tmp").mkdir()
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    store = Store(tmp_path / "labels.sqlite")
    fill(store, 3, k=2)
    v = store.next_comparison("kim")
    store.vote(v["token"], "a", annotator="kim")
    demo, url = serve(store, port=free_port(), block=False, quiet=True, download_seconds=2)

    def leftovers() -> list:
        return [p for p in (tmp_path / "tmp").rglob("*") if p.is_file() and "vrlhf-" in str(p)]

    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            page, fns = secrets.token_hex(6), ui_fns(c)
            links = []
            for fmt in ("hf", "jsonl"):
                out = ui_event(c, fns["vr-export"], ["all", fmt], page)["output"]["data"]
                assert "Export ready (captioning: 1 pairs" in out[0]["value"]
                links.append(out[1].split("href='")[1].split("'")[0])
            assert len(leftovers()) == 2 and not list((tmp_path / "tmp").rglob("vrlhf-export-*"))  # zips only
            body = c.get(links[0]).content
            assert "captioning/pairs.jsonl" not in zipfile.ZipFile(io.BytesIO(body)).namelist()  # the hf one
            assert len(leftovers()) == 1  # served, and deleted as it was served ...
            assert c.get(links[0]).status_code == 404  # ... so the link works once
            deadline = time.time() + 15
            while leftovers() and time.time() < deadline:  # the other one is never fetched
                time.sleep(0.5)
            assert not leftovers()  # deleted when its time was up
            assert c.get(links[1]).status_code == 404
    finally:
        demo.close()
