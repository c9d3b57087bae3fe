"""An annotator's whole day in a real Chromium (Debian's /usr/bin/chromium): keys that work whatever was clicked
last, guidelines for pairs and for rankings, the lead's tables that show what was compared, reservations that come
back when a tab closes, idles or logs out, a phone's first screen, and the small things of a first day."""

from __future__ import annotations

import statistics
import time

import pytest
from labfix import NEXT, ROOT, current, fill, free_port, start

from labeler.app import load_guidelines, serve
from labeler.store import Store
from labeler.users import add_user

GUIDES = ROOT / "data" / "demo" / "guidelines"
# Times each key press until the next comparison is on screen, inside the page (keydown's timestamp to the mutation
# that swaps the comparison), so the test's own polling is not counted.
LATENCY_PROBE = """() => {
  window.vrLatency = []; let down = null;
  document.addEventListener('keydown', e => { if ('0123'.includes(e.key)) down = performance.now(); }, true);
  new MutationObserver(() => {
    const e = document.querySelector('#vr-view .vr-cmp');
    const now = e && e.dataset.token;
    if (down !== null && now && now !== window.vrShown) {
      window.vrLatency.push(performance.now() - down); down = null;
    }
    window.vrShown = now;
  }).observe(document.body, {childList: true, subtree: true});
}"""


def vote_by_key(page, key: str) -> str:
    """Press a voting key; it must bring the next comparison (a key that does nothing fails the test)."""
    before = current(page)
    page.keyboard.press(key)
    page.wait_for_function(NEXT, arg=before, timeout=10_000)
    return current(page)


def test_keys_work_whatever_was_clicked_last(tmp_path, browser):
    """Click every control of the page once, each followed by a vote by key; then vote by key to 40 key votes.
    Every key press is a vote (none lost: counted in the database), typing in the comment box is not, and Enter or
    Esc there hand the keys back with the comment kept for the vote."""
    store = Store(tmp_path / "labels.sqlite")
    fill(store, 40, k=2)
    fill(store, 10, k=2, task="colorization", seed=2)
    demo, url = serve(store, port=free_port(), block=False, quiet=True,
                      guidelines=load_guidelines([f"{t}={GUIDES / t}.md" for t in ("captioning", "colorization")]))
    keys, key_votes, clicked_votes, undone = "1230", 0, 0, 0
    try:
        page = start(browser, url, "kim")
        page.evaluate(LATENCY_PROBE)

        def key_vote():
            nonlocal key_votes
            vote_by_key(page, keys[key_votes % 4])
            key_votes += 1

        def answered(selector: str):  # a click that runs a page event (a task, a button): wait for its answer
            with page.expect_response(lambda r: "run/predict" in r.url):
                page.click(selector)

        answered("#vr-task label:has-text('captioning')")  # the task picker: one task ...
        key_vote()
        answered("#vr-task label:has-text('All tasks')")  # ... and back to all, interleaved
        key_vote()
        page.click("#vr-flag input")  # the Flag box ...
        key_vote()
        assert store.votes()[-1]["flagged"] is True  # ... went with the vote the key made
        page.click("#vr-comment textarea, #vr-comment input")
        page.keyboard.type("cut off 1")  # typing in the comment box: "1" is text, not a vote
        assert not page.query_selector("#vr-view .vr-cmp") or key_votes == len(store.votes())
        page.keyboard.press("Enter")  # Enter leaves the box, the comment kept for the vote ...
        assert "Comment kept" in page.inner_text("#vr-comment")
        key_vote()
        assert store.votes()[-1]["comment"] == "cut off 1"
        page.click("#vr-comment textarea, #vr-comment input")
        page.keyboard.type("x")
        page.keyboard.press("Escape")  # ... and so does Esc
        key_vote()
        assert store.votes()[-1]["comment"] == "x"
        page.click("#vr-guidelines .label-wrap")  # the guidelines' header
        key_vote()
        page.click("#vr-progress")
        key_vote()
        page.click("#vr-view .vr-cand")  # a candidate (a caption or an image: an image opens the zoom ...)
        if page.is_visible("#vr-zoom"):
            page.click("#vr-zoom")  # ... which a click closes
        key_vote()
        answered("#vr-skip")  # buttons: a click votes, then keys go on
        clicked_votes += 1
        key_vote()
        answered("#vr-undo")
        undone += 1
        key_vote()
        answered("#vr-a")
        clicked_votes += 1
        page.keyboard.press(" ")  # the clicked button lost its focus: a stray Space presses nothing
        page.wait_for_timeout(300)
        assert len(store.votes()) == key_votes + clicked_votes
        key_vote()
        page.get_by_role("tab", name="Stats").click()  # another tab and back
        page.get_by_role("tab", name="Label").click()
        key_vote()
        page.keyboard.press("Tab")  # focus somewhere by keyboard
        page.keyboard.press("Tab")
        key_vote()
        page.click("body", position={"x": 5, "y": 5})
        key_vote()
        while key_votes < 40:
            key_vote()
        latencies = page.evaluate("window.vrLatency")
        page.context.close()
    finally:
        demo.close()
    votes = [v for v in store.votes() if v["annotator"] == "kim"]
    assert len(votes) == key_votes + clicked_votes == 42  # none lost, none twice
    assert sum(v["retracted_at"] is not None for v in votes) == undone == 1
    p50, p95 = statistics.median(latencies), statistics.quantiles(latencies, n=20)[-1]
    print(f"key -> next comparison in Chromium over {len(latencies)} key votes: p50 {p50:.0f} ms, p95 {p95:.0f} ms")
    assert len(latencies) >= 35


def test_rankings_get_their_own_guidelines_and_keys(tmp_path, browser):
    """Pairs show the pair rules (Tie [3]); the first ranking of the same task opens the ranking rules (no tie, best
    first) by itself, with the ranking keys."""
    store = Store(tmp_path / "labels.sqlite")
    fill(store, 2, k=2)
    fill(store, 2, k=4, seed=1)
    demo, url = serve(store, port=free_port(), block=False, quiet=True,
                      guidelines=load_guidelines([f"captioning={GUIDES / 'captioning.md'}"]))
    try:
        page = start(browser, url, "kim")
        guide = page.locator("#vr-guidelines-text")
        assert guide.is_visible()  # first login: open
        text = guide.inner_text()
        assert "Pairs: two captions" in text and "Tie [3]" in text and "Rankings:" not in text
        page.keyboard.press("g")  # closed by the annotator ...
        guide.wait_for(state="hidden")
        vote_by_key(page, "1")
        vote_by_key(page, "2")
        assert page.get_attribute("#vr-view .vr-cmp", "data-k") == "4"
        guide.wait_for(state="visible")  # ... and opened again for the first ranking: new rules
        text = guide.inner_text()
        assert "Rankings: three or four captions" in text and "no tie" in text and "best first" in text
        assert "Tie [3]" not in text and "Pairs:" not in text
        assert page.is_visible("#vr-rank-D") and not page.is_visible("#vr-tie")
        page.keyboard.press("3")
        page.keyboard.press("1")
        vote_by_key(page, "4")  # C > A > D, B implied
        page.context.close()
    finally:
        demo.close()
    last = store.votes()[-1]
    assert last["choice"] == "rank" and [last["shown"].index(c) for c in last["ranking"]] == [2, 0, 3, 1]


def test_the_lead_sees_who_chose_what_and_what_it_looked_like(tmp_path, browser):
    """Disagreements and comments name the letter each annotator saw, whole captions and image thumbnails, under
    column names a lead reads without the docs; a row opens the comparison as each annotator saw it."""
    store = Store(tmp_path / "labels.sqlite", overlap=2)
    rid = store.add_round("captioning", "/runs/mle", 2)
    long_caption = "a large red circle in the top left corner and a small blue square at the bottom right of it"
    from labfix import image

    store.add_comparison(rid, "row-0", image(1), [long_caption, "a green triangle"])
    fill(store, 1, k=2, task="colorization", seed=3)

    def vote(name: str, pick_first_id: bool, **note):
        v = store.next_comparison(name)
        ids = [c["candidate_id"] for c in v["candidates"]]
        want = min(ids) if pick_first_id else max(ids)
        store.vote(v["token"], "a" if ids[0] == want else "b", annotator=name, **note)
        return v

    for _ in range(2):  # both comparisons: lead picks the older candidate, alice the newer (with a comment)
        vote("lead", True)
        vote("alice", False, comment="the <b>left</b> one is cut off", flagged=True)
    demo, url = serve(store, port=free_port(), block=False, quiet=True)
    try:
        page = start(browser, url, "lead")
        page.get_by_role("tab", name="Stats").click()
        page.wait_for_selector("#vr-disagreements tr[data-comparison='1']")
        headers = page.inner_text("#vr-per-annotator")
        assert "median seconds per label" in headers and "agreement with others" in headers
        assert "median_s" not in headers and "left_share" not in headers
        row = page.locator("#vr-disagreements tr[data-comparison='1']")
        said = row.inner_text()
        assert long_caption in said  # whole, not cut at 60 characters
        assert "alice chose" in said and "lead chose" in said and "a green triangle" in said
        colour = page.locator("#vr-disagreements tr[data-comparison='2']")
        assert colour.locator("img").count() == 3  # the input and what each of the two chose
        notes = page.inner_text("#vr-notes")
        assert "the <b>left</b> one is cut off" in notes  # escaped, shown as written
        assert "chose A: " in notes or "chose B: " in notes
        assert "Who chose what" in page.inner_text("#vr-disagreements")
        colour.click()  # opens the comparison as its annotators saw it
        page.wait_for_selector("#vr-inspected .vr-inspect")
        shown = page.inner_text("#vr-inspected")
        assert "alice saw it in this order and chose" in shown and "lead saw it in this order and chose" in shown
        assert "Comment: “the <b>left</b> one is cut off”" in shown
        assert page.locator("#vr-inspected .vr-cand").count() == 4  # two candidates, as each of two saw them
        assert page.locator("#vr-inspected .vr-chosen").count() == 2
        page.context.close()
    finally:
        demo.close()


def test_a_closed_tab_gives_its_reservations_back_within_30_s(tmp_path, browser):
    store = Store(tmp_path / "labels.sqlite")
    fill(store, 6, k=2)
    demo, url = serve(store, port=free_port(), block=False, quiet=True)
    try:
        page = start(browser, url, "kim")
        deadline = time.time() + 10
        while store.progress("bob")["tasks"]["captioning"]["reserved"] < 2 and time.time() < deadline:
            time.sleep(0.1)  # the shown comparison and the prefetched next one
        assert store.progress("bob")["tasks"]["captioning"]["reserved"] == 2
        closed = time.time()
        page.context.close()
        while store.progress("bob")["tasks"]["captioning"]["reserved"] and time.time() < closed + 40:
            time.sleep(0.2)
        back = time.time() - closed
        print(f"a closed tab's reservations were back after {back:.1f} s")
        assert back < 30
        assert store.next_comparison("bob")["comparison_id"] == 1  # kim's comparison goes to bob
    finally:
        demo.close()


def test_an_idle_page_pauses_and_gives_its_reservations_back(tmp_path, browser):
    store = Store(tmp_path / "labels.sqlite")
    fill(store, 4, k=2)
    demo, url = serve(store, port=free_port(), block=False, quiet=True, idle_seconds=5)
    try:
        page = start(browser, url, "kim")
        page.wait_for_selector("#vr-view .vr-paused", timeout=15_000)
        assert "went back to the queue" in page.inner_text("#vr-view")
        assert store.progress("bob")["tasks"]["captioning"]["reserved"] == 0
        assert not page.is_visible("#vr-a")
        page.keyboard.press("1")  # the first key goes on: no vote, a comparison again
        page.wait_for_selector("#vr-view .vr-cmp")
        assert store.counts()["votes"] == 0 and "Welcome back" in page.inner_text("#vr-message")
        vote_by_key(page, "1")  # (before the page could idle again)
        assert store.counts()["votes"] == 1 and "Saved: A better" in page.inner_text("#vr-message")
        page.context.close()
    finally:
        demo.close()


def test_log_out_ends_the_login_and_gives_the_reservations_back(tmp_path, browser):
    users = tmp_path / "users.json"
    add_user(users, "alice", "alice-pw", rounds=4)
    store = Store(tmp_path / "labels.sqlite")
    fill(store, 4, k=2)
    demo, url = serve(store, port=free_port(), auth_file=str(users), block=False, quiet=True)
    try:
        page = browser.new_context().new_page()
        page.goto(url)
        page.fill("#username", "alice")
        page.fill("#password", "alice-pw")
        page.click("#submit")
        page.wait_for_selector("#vr-view .vr-cmp")
        vote_by_key(page, "1")
        page.click("#vr-logout")
        page.wait_for_selector("#username")  # the login page
        deadline = time.time() + 30
        while store.progress("bob")["tasks"]["captioning"]["reserved"] and time.time() < deadline:
            time.sleep(0.2)
        assert store.progress("bob")["tasks"]["captioning"]["reserved"] == 0
        page.goto(url)  # still logged out: the login page again
        page.wait_for_selector("#username")
        page.context.close()
    finally:
        demo.close()


@pytest.mark.parametrize("width,height,candidate", [(390, 844, 185), (360, 740, 170)])
def test_a_phone_shows_votes_skip_and_undo_on_the_first_screen(tmp_path, browser, width, height, candidate):
    """With the guidelines just opened (first login) the vote buttons, Skip and Undo are on the first screen;
    candidates are as wide as docs/LABELER.md says (185 px at 390, 170 px at 360), two per row."""
    store = Store(tmp_path / "labels.sqlite")
    fill(store, 2, k=4, task="colorization", seed=5)
    fill(store, 2, k=2)
    demo, url = serve(store, port=free_port(), block=False, quiet=True,
                      guidelines=load_guidelines([f"{t}={GUIDES / t}.md" for t in ("captioning", "colorization")]))
    try:
        page = start(browser, url, "pat", viewport={"width": width, "height": height})
        page.wait_for_selector("#vr-guidelines.vr-new")  # opened by the server, folded on a phone, marked new
        page.wait_for_selector("#vr-guidelines-text", state="hidden")
        boxes = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll(
            '#vr-rank-A, #vr-rank-D, #vr-allbad, #vr-skip, #vr-undo, #vr-view .vr-cand, #vr-view .vr-input')]
            .map((e, i) => [e.id || e.className + i, e.getBoundingClientRect().toJSON()]))""")
        for name in ("vr-rank-A", "vr-rank-D", "vr-allbad", "vr-skip", "vr-undo"):
            box = boxes[name]
            assert box["y"] >= 0 and box["y"] + box["height"] <= height and box["x"] + box["width"] <= width, name
        cands = [b for k, b in boxes.items() if "vr-cand" in k]
        inputs = [b for k, b in boxes.items() if "vr-input" in k]
        assert len(cands) == 4 and all(abs(b["width"] - candidate) <= 2 for b in cands), cands
        assert abs(inputs[0]["width"] - candidate) <= 2
        page.keyboard.press("g")  # the guidelines open on request, in a short box: the buttons stay in view
        page.wait_for_selector("#vr-guidelines-text", state="visible")
        assert page.locator("#vr-skip").bounding_box()["y"] + 30 <= height
        page.screenshot(path=str(tmp_path / f"phone-{width}.png"))
        page.context.close()
    finally:
        demo.close()


def test_the_first_screen_a_spaced_name_and_a_used_download_link(tmp_path, browser):
    store = Store(tmp_path / "labels.sqlite")
    fill(store, 3, k=2)
    demo, url = serve(store, port=free_port(), block=False, quiet=True)
    try:
        page = browser.new_context(accept_downloads=True).new_page()
        page.goto(url)
        page.wait_for_selector("#vr-name")
        assert not page.get_by_role("tab", name="Label").is_visible()  # no empty tabs under the name box
        page.fill("#vr-name textarea, #vr-name input", "  spaced  ")
        page.click("#vr-start")
        page.wait_for_selector("#vr-view .vr-cmp")
        assert page.get_by_role("tab", name="Label").is_visible()
        assert "Your name is stored as “spaced”" in page.inner_text("#vr-message")
        vote_by_key(page, "1")
        assert store.votes()[0]["annotator"] == "spaced"
        page.get_by_role("tab", name="Stats").click()
        with page.expect_download():
            page.click("#vr-export")
        page.wait_for_selector("#vr-download .vr-used")  # the used link is gone, replaced by a sentence
        assert page.locator("#vr-download a").count() == 0
        assert "the link worked once" in page.inner_text("#vr-download")
        page.context.close()
    finally:
        demo.close()


def test_an_annotator_cannot_open_a_comparison_of_the_lead_view(tmp_path):
    """The row-opening event shows everyone's votes and comments: admins only, refused with a sentence otherwise."""
    import httpx
    from labfix import http_login, ui_event, ui_fns

    users = tmp_path / "users.json"
    add_user(users, "alice", "alice-pw", rounds=4)
    add_user(users, "lead", "lead-pw", rounds=4, admin=True)
    store = Store(tmp_path / "labels.sqlite")
    fill(store, 2, k=2)
    v = store.next_comparison("lead")
    store.vote(v["token"], "a", annotator="lead", comment="secret note")
    demo, url = serve(store, port=free_port(), auth_file=str(users), block=False, quiet=True)
    try:
        for name, allowed in (("alice", False), ("lead", True)):
            c = http_login(url, name)
            said, shown = ui_event(c, ui_fns(c)["vr-inspect"], [str(v["comparison_id"])], f"{name}-page")["output"][
                "data"]
            if allowed:
                assert "secret note" in shown and "lead</b> saw it in this order" in shown
            else:
                assert said["value"].startswith("Only admins see statistics") and "secret note" not in str(shown)
            c.close()
        with httpx.Client(base_url=url) as anonymous:  # not logged in: nothing
            assert anonymous.post("gradio_api/run/predict", json={}).status_code in (401, 403)
    finally:
        demo.close()


def test_a_vote_after_the_server_took_the_page_for_closed_still_counts(tmp_path, browser):
    """A page whose heartbeat stream dropped for a moment is unloaded (its reservations released) while it stays
    open; the key pressed on the comparison it shows takes that comparison back and votes on it, if nobody took it."""
    store = Store(tmp_path / "labels.sqlite")
    fill(store, 4, k=2)
    demo, url = serve(store, port=free_port(), block=False, quiet=True)
    try:
        page = start(browser, url, "kim")
        on_screen = int(page.get_attribute("#vr-view .vr-cmp", "data-comparison"))
        lab = demo.labeler
        for session in list(lab.desks):  # what Gradio's unload does when the heartbeat stream ends
            lab.give_back(lab.desks.pop(session))
        assert store.progress("bob")["tasks"]["captioning"]["reserved"] == 0
        vote_by_key(page, "2")
        assert [(v["comparison_id"], v["choice"]) for v in store.votes()] == [(on_screen, "b")]
        assert "Saved: B better on comparison" in page.inner_text("#vr-message")
        page.context.close()
    finally:
        demo.close()


def test_a_released_reservation_comes_back_only_while_its_slot_is_free(tmp_path):
    from labeler.leases import reclaim

    store = Store(tmp_path / "labels.sqlite")
    fill(store, 2, k=2)
    kim = store.next_comparison("kim")
    store.release("kim", [kim["token"]])
    back = reclaim(store, "kim", kim["token"])
    assert back["comparison_id"] == kim["comparison_id"] and back["token"] == kim["token"]
    assert [c["candidate_id"] for c in back["candidates"]] == [c["candidate_id"] for c in kim["candidates"]]
    assert reclaim(store, "bob", kim["token"]) is None  # not bob's
    store.release("kim", [kim["token"]])
    bob = store.next_comparison("bob")  # the slot goes to bob ...
    assert bob["comparison_id"] == kim["comparison_id"]
    assert reclaim(store, "kim", kim["token"]) is None  # ... so kim cannot take it back
    store.vote(bob["token"], "a", annotator="bob")
    assert store.counts()["votes"] == 1


def test_closing_one_page_keeps_what_another_page_of_the_same_annotator_shows(tmp_path, browser):
    """A reload (or a second tab) opens a page that shows the annotator's open lease before the old page's unload
    arrives: that unload must not release the lease the new page is voting on."""
    store = Store(tmp_path / "labels.sqlite")
    fill(store, 4, k=2)
    demo, url = serve(store, port=free_port(), block=False, quiet=True)
    try:
        old = start(browser, url, "kim")
        new = start(browser, url, "kim")
        shown = new.get_attribute("#vr-view .vr-cmp", "data-token")
        assert shown == old.get_attribute("#vr-view .vr-cmp", "data-token")  # the annotator's oldest open lease
        old.context.close()
        deadline = time.time() + 30
        while len(demo.labeler.desks) > 1 and time.time() < deadline:  # the old page's unload has run
            time.sleep(0.2)
        assert len(demo.labeler.desks) == 1
        vote_by_key(new, "1")
        assert [v["annotator"] for v in store.votes()] == ["kim"] and "Saved: A better" in new.inner_text("#vr-message")
        new.context.close()
    finally:
        demo.close()
