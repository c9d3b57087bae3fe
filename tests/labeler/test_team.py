"""The labeling app as a team uses it, in a real Chromium (Debian's /usr/bin/chromium): guidelines, roles, the admin's
export with both tasks, sentences instead of bare "Error" badges, the reservation timer, the end of the queue and
new work arriving without a reload, phones, and an expired login."""

from __future__ import annotations

import io
import tempfile
import time
import zipfile

import httpx
import pytest
from labfix import fill, free_port, http_login, start, ui_event, ui_fns

from labeler.app import load_guidelines, serve
from labeler.store import Store
from labeler.users import add_user

CAPTION_RULE = "Prefer the caption that names every shape"
COLOUR_RULE = "Prefer colours a camera could have taken"


@pytest.fixture(scope="module")
def downloads_dir(tmp_path_factory):
    """The system temp dir of this module's in-process servers: what an export leaves behind shows up here."""
    tmp = tmp_path_factory.mktemp("systmp")
    before, tempfile.tempdir = tempfile.tempdir, str(tmp)
    yield tmp
    tempfile.tempdir = before


@pytest.fixture(scope="module")
def team(tmp_path_factory, downloads_dir):
    """A server under --auth: annotator alice, admin lead; both tasks; overlap 2; guidelines per task."""
    tmp = tmp_path_factory.mktemp("team")
    users = tmp / "users.json"
    add_user(users, "alice", "alice-pw", rounds=4)
    add_user(users, "lead", "lead-pw", rounds=4, admin=True)
    (tmp / "cap.md").write_text(f"## Captioning\n{CAPTION_RULE} in the image.\n")
    (tmp / "col.md").write_text(f"## Colorization\n{COLOUR_RULE}.\n")
    store = Store(tmp / "labels.sqlite", overlap=2)
    fill(store, 4, k=2)
    fill(store, 4, k=2, task="colorization", seed=2)
    guidelines = load_guidelines([f"captioning={tmp / 'cap.md'}", f"colorization={tmp / 'col.md'}"])
    demo, url = serve(store, port=free_port(), auth_file=str(users), block=False, quiet=True, guidelines=guidelines)
    yield store, url, users
    demo.close()


def log_in(browser, url: str, name: str, password: str | None = None, viewport=None):
    page = browser.new_context(viewport=viewport or {"width": 1280, "height": 900}).new_page()
    page.goto(url)
    page.fill("#username", name)
    page.fill("#password", password or f"{name}-pw")
    page.click("#submit")
    page.wait_for_selector("#vr-view .vr-cmp")
    return page


def shown(page) -> str:
    return page.get_attribute("#vr-view .vr-cmp", "data-token")


def press(page, key: str) -> None:
    """Press a voting key and wait until the next comparison (or the end page) is on screen."""
    before = shown(page)
    page.keyboard.press(key)
    page.wait_for_function("b => { const e = document.querySelector('#vr-view .vr-cmp');"
                           " return !e || e.dataset.token !== b; }", arg=before)


def test_guidelines_open_at_first_login_and_follow_the_task(team, browser):
    _, url, _ = team
    page = log_in(browser, url, "alice")
    guide = page.locator("#vr-guidelines-text")
    assert guide.is_visible() and CAPTION_RULE in guide.inner_text()  # first login: open, this task's rules
    assert "Both bad [0]" in guide.inner_text() and "Skip [S]" in guide.inner_text()  # what the choices mean
    page.keyboard.press("g")
    guide.wait_for(state="hidden")
    page.keyboard.press("g")  # open again at any time
    guide.wait_for(state="visible")
    assert page.get_attribute("#vr-view .vr-cmp", "data-task") == "captioning"
    press(page, "1")  # tasks interleave: the next comparison is a colorization, with its own guidelines
    assert page.get_attribute("#vr-view .vr-cmp", "data-task") == "colorization"
    page.wait_for_function(f"() => document.querySelector('#vr-guidelines-text').innerText.includes({COLOUR_RULE!r})")
    assert "Saved: A better on comparison 1" in page.inner_text("#vr-message")
    page.context.close()


def test_an_annotator_cannot_open_stats_or_export(team, browser, downloads_dir):
    store, url, _ = team
    page = log_in(browser, url, "alice")
    assert page.get_by_role("tab", name="Label").is_visible()
    assert not page.get_by_role("tab", name="Stats").is_visible()  # no Stats tab for annotators
    page.context.close()
    # Nor can alice run its events by hand: each answers with a sentence and exports nothing.
    c = http_login(url, "alice")
    fns, session = ui_fns(c), "alice-forged-page"
    for elem, data in (("vr-export", ["all", "hf"]), ("vr-refresh", [])):
        got = ui_event(c, fns[elem], data, session)
        said = got["output"]["data"][0]["value"]
        assert said.startswith("Only admins see statistics and export"), (elem, got)
        assert "Download" not in str(got["output"]["data"][1:])
    assert not list(downloads_dir.glob("vrlhf-*"))


def test_the_admin_exports_both_tasks_from_the_page(team, browser, downloads_dir):
    from reward_model.data import load_export

    store, url, _ = team

    def older_wins(v) -> str:  # the same judgment whatever order the candidates were shown in
        ids = [c["candidate_id"] for c in v["candidates"]]
        return "a" if ids[0] < ids[1] else "b"

    # Two annotators judge the same comparisons (overlap 2); alice disagrees once, with a tie, a comment and a flag.
    leads = set()
    for _ in range(4):
        v = store.next_comparison("lead")
        store.vote(v["token"], older_wins(v), annotator="lead")
        leads.add(v["comparison_id"])
    tied = None
    for _ in range(4):
        v = store.next_comparison("alice")
        if tied is None and v["comparison_id"] in leads:
            tied = v["comparison_id"]
            store.vote(v["token"], "tie", annotator="alice", comment="the input looks cut off", flagged=True)
        else:
            store.vote(v["token"], older_wins(v), annotator="alice")
    assert tied is not None
    page = log_in(browser, url, "lead")
    page.get_by_role("tab", name="Stats").click()  # opening the tab fills it: no Refresh needed
    page.wait_for_function("() => document.querySelector('#vr-summary').innerText.includes('standing votes')")
    summary = page.inner_text("#vr-summary")
    assert "captioning" in summary and "colorization" in summary and "Krippendorff's alpha measures" in summary
    assert "the input looks cut off" in page.inner_text("#vr-notes")
    disagreed = page.inner_text(f"#vr-disagreements tr[data-comparison='{tied}']")  # who chose what, by letter
    assert "alice Tie" in disagreed and "lead chose " in disagreed
    with page.expect_download() as got:
        page.click("#vr-export")  # both tasks, one folder each; the download starts by itself
    body = open(got.value.path(), "rb").read()
    page.wait_for_function("() => document.querySelector('#vr-admin-msg').innerText.includes('Export ready')")
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        out = downloads_dir.parent / "unzipped"
        z.extractall(out)
    pairs = {t: load_export(out / t) for t in ("captioning", "colorization")}  # manifest required and checked
    assert {t: set(ds["task"]) for t, ds in pairs.items()} == {"captioning": {"captioning"},
                                                                "colorization": {"colorization"}}
    judged = [v for v in store.votes() if v["choice"] in ("a", "b", "tie") and not v["retracted_at"]]
    for task, ds in pairs.items():
        assert len(ds) == sum(v["task"] == task for v in judged) > 0
    assert "the input looks cut off" in pairs["captioning"]["comment"] and sum(pairs["captioning"]["flagged"]) == 1
    # The file left the server with the download: the link works once, and nothing is left on disk.
    link = page.get_attribute("#vr-download .vr-used", "data-href")  # the used link left the page
    assert page.request.get(url + link).status == 404
    assert not list(downloads_dir.glob("vrlhf-*"))
    page.context.close()


@pytest.fixture(scope="module")
def solo(tmp_path_factory):
    """A loopback server without logins: a small store, pages check for new work every second."""
    store = Store(tmp_path_factory.mktemp("solo") / "labels.sqlite")
    fill(store, 3, k=2, task="colorization")
    demo, url = serve(store, port=free_port(), block=False, quiet=True, poll_seconds=1)
    yield store, url
    demo.close()


def test_an_empty_name_says_what_to_do_and_the_box_stays_usable(solo, browser):
    _, url = solo
    page = browser.new_page()
    page.goto(url)
    page.click("#vr-start")
    page.wait_for_selector("#vr-name-msg :text('Type your name first')")
    assert "Error" not in page.inner_text("body")  # a sentence, no bare error badge over the box
    page.fill("#vr-name textarea, #vr-name input", "kim")  # the box still takes input and Start works
    page.click("#vr-start")
    page.wait_for_selector("#vr-view .vr-cmp")
    page.close()


def test_an_export_with_nothing_to_export_says_so_and_offers_no_link(solo):
    store, url = solo
    assert store.counts()["votes"] == 0
    with httpx.Client(base_url=url, timeout=30) as c:
        said, link = ui_event(c, ui_fns(c)["vr-export"], ["all", "hf"], "solo-admin")["output"]["data"]
    assert said["value"].startswith("Nothing was exported: nothing to export: 0 colorization votes make no "
                                    "preference pair") and link == ""


def test_a_phone_shows_candidates_at_least_as_wide_as_the_input(solo, browser):
    _, url = solo
    page = start(browser, url, "pat", viewport={"width": 390, "height": 844})
    widths = page.evaluate("""() => {
        const w = (sel) => [...document.querySelectorAll(sel)].map(e => e.getBoundingClientRect().width);
        return {input: w('#vr-view .vr-input img'), candidates: w('#vr-view .vr-cand img')};
    }""")
    assert len(widths["candidates"]) == 2 and widths["input"][0] >= 100, widths
    assert min(widths["candidates"]) >= widths["input"][0] - 0.5, widths
    page.click("#vr-view .vr-cand .vr-zoom-btn")  # its enlarge button enlarges a candidate (a tap on it marks) ...
    zoomed = page.locator("#vr-zoom img")
    zoomed.wait_for(state="visible")
    assert zoomed.bounding_box()["width"] >= 350
    page.keyboard.press("Escape")  # ... and Esc closes it
    zoomed.wait_for(state="hidden")
    page.context.close()


def test_the_end_of_the_queue_then_lapsed_reservations_and_new_rounds_without_reload(tmp_path, browser):
    """'Done' only when nothing is left for this annotator: buttons hidden, reservations of others counted; a lapsed
    reservation and then a new round show up on the open page by itself."""
    store = Store(tmp_path / "labels.sqlite")
    fill(store, 3, k=2, task="colorization")
    demo, url = serve(store, port=free_port(), block=False, quiet=True, poll_seconds=1)
    try:
        # Someone else's reservation, made by another server with 10-second reservations: not kim's to do for now.
        held = Store(tmp_path / "labels.sqlite", lease_seconds=10).next_comparison("bob")
        page = start(browser, url, "kim")
        while page.query_selector("#vr-view .vr-cmp"):
            press(page, "1")
        done = page.inner_text("#vr-view")
        assert "done for now" in done and "1 comparison is still reserved by other annotators" in done
        for button in ("#vr-a", "#vr-b", "#vr-tie", "#vr-bad", "#vr-skip", "#vr-comment"):
            assert not page.is_visible(button), button
        assert "2 labelled, 0 left (+1 reserved by others)" in page.inner_text("#vr-progress")
        assert held["comparison_id"] not in {v["comparison_id"] for v in store.votes()}
        page.wait_for_selector("#vr-view .vr-cmp", timeout=20_000)  # bob's reservation lapses: it comes to kim
        assert page.get_attribute("#vr-view .vr-cmp", "data-comparison") == str(held["comparison_id"])
        assert page.is_visible("#vr-a") and "New comparisons have arrived" in page.inner_text("#vr-message")
        press(page, "1")
        page.wait_for_selector("#vr-view .vr-done:has-text('All done')")
        fill(store, 1, k=2, task="colorization", seed=7, policy="policy-new")  # a new round is sampled meanwhile
        page.wait_for_selector("#vr-view .vr-cmp", timeout=15_000)  # ... and appears without a reload
        press(page, "2")
        assert "4 labelled" in page.inner_text("#vr-progress")
        page.context.close()
    finally:
        demo.close()


def test_an_expiring_reservation_warns_and_a_lost_one_is_explained(tmp_path, browser):
    store = Store(tmp_path / "labels.sqlite", lease_seconds=8)
    fill(store, 3, k=2)
    demo, url = serve(store, port=free_port(), block=False, quiet=True)
    try:
        page = start(browser, url, "kim")
        timer = page.locator("#vr-view .vr-timer")
        assert "Reserved for you for 0:0" in timer.inner_text()
        page.wait_for_selector("#vr-view .vr-timer.vr-warn:has-text('vote now')", timeout=15_000)
        page.wait_for_selector("#vr-view .vr-timer:has-text('has run out')", timeout=15_000)
        lost = int(page.get_attribute("#vr-view .vr-cmp", "data-comparison"))
        # Someone else is given the lapsed comparison (once the server's clock, not only the page's, says it lapsed:
        # on a loaded machine the two can be a second apart); kim's vote then cannot count, and the page says why.
        deadline, taken = time.time() + 20, False
        while not taken and time.time() < deadline:
            v = store.next_comparison("bob")
            if v is None:
                time.sleep(0.2)
            elif v["comparison_id"] == lost:
                taken = True
            else:
                store.vote(v["token"], "skip", annotator="bob")
        assert taken, "the lapsed comparison never went to another annotator"
        press(page, "1")
        assert "ran out and it went to another annotator" in page.inner_text("#vr-message")
        assert not [x for x in store.votes() if x["annotator"] == "kim"]
        page.context.close()
    finally:
        demo.close()


def test_an_expired_login_says_so_and_logging_in_again_goes_on(tmp_path, browser):
    """The server restarts under --auth: the page says the session expired (not four "Error" badges), the login
    page says why a login fails, and after logging in again labelling goes on."""
    users = tmp_path / "users.json"
    add_user(users, "alice", "alice-pw", rounds=4)
    store = Store(tmp_path / "labels.sqlite")
    fill(store, 4, k=2)
    port = free_port()
    demo, url = serve(store, port=port, auth_file=str(users), block=False, quiet=True)
    page = browser.new_page()
    try:
        page.goto(url)
        page.fill("#username", "alice")
        page.click("#submit")  # no password: a sentence, not silence
        page.wait_for_selector("#message:has-text('Type your password too')")
        page.fill("#password", "wrong")
        page.click("#submit")
        page.wait_for_selector("#message:has-text('do not match')")
        page.fill("#password", "alice-pw")
        page.click("#submit")
        page.wait_for_selector("#vr-view .vr-cmp")
        press(page, "1")
        demo.close()  # the server restarts: its logins are gone
        demo, url = serve(store, port=port, auth_file=str(users), block=False, quiet=True)
        page.keyboard.press("1")
        page.wait_for_selector("#vr-expired:has-text('Your session has expired')")
        page.click("#vr-login-again")
        page.wait_for_selector("#message:has-text('Your session has expired')")
        page.fill("#username", "alice")
        page.fill("#password", "alice-pw")
        page.click("#submit")
        page.wait_for_selector("#vr-view .vr-cmp")
        press(page, "2")
        assert [v["choice"] for v in store.votes()] == ["a", "b"]
    finally:
        page.close()
        demo.close()


def test_the_end_page_names_reservations_and_other_tasks_with_work():
    from labeler.page import render_done

    progress = {"remaining": 5, "available": 3, "tasks": {
        "captioning": {"count": 9, "remaining": 2, "available": 0, "reserved": 2},
        "colorization": {"count": 1, "remaining": 3, "available": 3, "reserved": 0}}}
    one_task = render_done(progress, "captioning", 10)
    assert "done for now" in one_task and "2 comparisons are still reserved" in one_task
    assert "Other tasks still have work for you: colorization (3): pick one above." in one_task
    finished = {"remaining": 0, "available": 0, "tasks": {"captioning": {"count": 9, "remaining": 0, "available": 0,
                                                                          "reserved": 0}}}
    assert "All done: nothing left to label. Thank you!" in render_done(finished, None, 10)
