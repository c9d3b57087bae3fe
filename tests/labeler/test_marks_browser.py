"""Marks in a real Chromium (Debian's /usr/bin/chromium): click or tap where a candidate is wrong (a cell of an image's
grid, a word of a caption), click again to remove, vote by key or by tap; the database keeps exactly what was marked,
on the candidate it was marked on, and nothing leaks to the next comparison, a skip or an undone vote."""

from __future__ import annotations

import json

from labfix import NEXT, current, fill, free_port, image, start

from labeler.app import serve
from labeler.store import Store


def until_next(page, act) -> None:
    """Do `act` (a key, a click, a tap that votes) and wait until the next comparison is on screen."""
    before = current(page)
    act()
    page.wait_for_function(NEXT, arg=before, timeout=10_000)


def pick_task(page, task: str, press=None) -> None:
    """Label `task` only (the task picker), and wait for its first comparison."""
    with page.expect_response(lambda r: "run/predict" in r.url):
        (press or page.click)(f"#vr-task label:has-text('{task}')")
    page.wait_for_function("t => { const e = document.querySelector('#vr-view .vr-cmp');"
                           " return e && e.dataset.task === t; }", arg=task)


def on_screen(page) -> tuple[int, dict]:
    """The comparison on screen: its id and {position: candidate id}."""
    cmp = page.locator("#vr-view .vr-cmp")
    cards = page.locator("#vr-view .vr-cand")
    ids = {cards.nth(i).get_attribute("data-position"): int(cards.nth(i).get_attribute("data-candidate"))
           for i in range(cards.count())}
    return int(cmp.get_attribute("data-comparison")), ids


def cell_point(page, position: str, row: int, col: int, grid: int) -> tuple[float, float]:
    """Where the centre of cell (row, col) of candidate `position`'s image is on screen (scrolled to the middle of
    the window, clear of the vote bar fixed to its bottom)."""
    img = page.locator(f"#vr-view .vr-cand[data-position='{position}'] .vr-mark img")
    img.evaluate("e => e.scrollIntoView({block: 'center'})")
    box = img.bounding_box()
    return box["x"] + (col + 0.5) * box["width"] / grid, box["y"] + (row + 0.5) * box["height"] / grid


def shaded(page, position: str) -> list[list[int]]:
    cells = page.locator(f"#vr-view .vr-cand[data-position='{position}'] .vr-cell")
    return sorted(json.loads(f"[{cells.nth(i).get_attribute('data-cell')}]") for i in range(cells.count()))


def struck(page, position: str) -> list[int]:
    words = page.locator(f"#vr-view .vr-cand[data-position='{position}'] .vr-word.vr-marked")
    return sorted(int(words.nth(i).get_attribute("data-i")) for i in range(words.count()))


def stored(store: Store) -> list[tuple[int, str, dict | None, bool]]:
    return [(v["comparison_id"], v["choice"], v["marks"], v["retracted_at"] is not None) for v in store.votes()]


def test_marks_made_with_the_mouse_go_with_the_vote_by_key(tmp_path, browser):
    """Cells on an image candidate (8x8, the colorizer's grid: the round's policy has no policy.json) and a word of a
    caption in a ranking; one removed by clicking it again; then votes by key. What the database keeps is exactly
    what was clicked; a vote without marks, a skip and an undone vote keep none, and the next comparison starts
    unmarked."""
    store = Store(tmp_path / "labels.sqlite")
    fill(store, 3, k=2, task="colorization", seed=2)  # comparisons 1-3
    fill(store, 2, k=3, seed=3)  # comparisons 4-5: captioning rankings
    demo, url = serve(store, port=free_port(), block=False, quiet=True)
    try:
        page = start(browser, url, "kim")
        pick_task(page, "colorization")
        first, ids = on_screen(page)
        assert page.get_attribute("#vr-view .vr-cand[data-position='A'] .vr-mark", "data-grid") == "8"
        for row, col in ((2, 5), (6, 1), (0, 7)):
            page.mouse.click(*cell_point(page, "A", row, col, 8))
        page.mouse.click(*cell_point(page, "A", 6, 1, 8))  # again: removed
        assert shaded(page, "A") == [[0, 7], [2, 5]] and shaded(page, "B") == []
        until_next(page, lambda: page.keyboard.press("2"))  # keys still vote after clicks on the overlay
        second, _ = on_screen(page)
        assert shaded(page, "A") == [] and shaded(page, "B") == []  # the next comparison starts unmarked
        assert stored(store) == [(first, "b", {str(ids["A"]): {"grid": 8, "cells": [[2, 5], [0, 7]]}}, False)]

        page.mouse.click(*cell_point(page, "B", 3, 3, 8))  # marked, then skipped: a skip keeps no marks ...
        until_next(page, lambda: page.keyboard.press("s"))
        third, ids = on_screen(page)
        until_next(page, lambda: page.keyboard.press("1"))  # ... and they do not come with the next vote
        assert stored(store)[1:] == [(second, "skip", None, False), (third, "a", None, False)]

        pick_task(page, "captioning")
        ranking, ids = on_screen(page)
        page.click("#vr-view .vr-cand[data-position='B'] .vr-word[data-i='1']")
        page.click("#vr-view .vr-cand[data-position='C'] .vr-word[data-i='0']")
        page.click("#vr-view .vr-cand[data-position='C'] .vr-word[data-i='0']")  # again: removed
        assert struck(page, "B") == [1] and struck(page, "C") == []
        page.keyboard.press("3")  # C first: the page re-renders the ranking so far, the marks stay on screen ...
        page.wait_for_function("() => document.querySelector('#vr-view').innerText.includes('Ranking: C')")
        assert struck(page, "B") == [1]
        until_next(page, lambda: page.keyboard.press("1"))  # ... and go with the vote: C > A > B
        assert stored(store)[3] == (ranking, "rank", {str(ids["B"]): {"words": [1]}}, False)

        until_next(page, lambda: page.keyboard.press("u"))  # undo: the vote and its marks are taken back ...
        assert on_screen(page)[0] == ranking and struck(page, "B") == []  # ... and it comes back unmarked
        page.keyboard.press("2")
        page.wait_for_function("() => document.querySelector('#vr-view').innerText.includes('Ranking: B')")
        until_next(page, lambda: page.keyboard.press("1"))  # B > A > C, no marks this time
        page.context.close()
    finally:
        demo.close()
    votes = stored(store)
    assert votes[3] == (ranking, "rank", {str(ids["B"]): {"words": [1]}}, True)  # retracted, marks and all
    assert votes[4] == (ranking, "rank", None, False)
    assert len(votes) == 5


def test_marks_by_touch_at_phone_size_on_the_grid_the_server_knows(tmp_path, browser):
    """At 390x844 with a touch screen: taps mark cells of the grid the round's policy says (4 here, from its
    policy.json) and a caption's word, a second tap removes one, and a tap on the vote button sends them."""
    policy = tmp_path / "colorizer"
    policy.mkdir()
    (policy / "policy.json").write_text(json.dumps({"meta": {"task": "colorization", "grid": 4}}))
    store = Store(tmp_path / "labels.sqlite")
    rid = store.add_round("colorization", str(policy), 2)
    for i in range(2):
        store.add_comparison(rid, f"row-{i}", image(i).convert("L").convert("RGB"), [image(10 + i), image(20 + i)])
    fill(store, 2, k=2, seed=5)
    demo, url = serve(store, port=free_port(), block=False, quiet=True)
    try:
        page = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True).new_page()
        page.goto(url)
        page.fill("#vr-name textarea, #vr-name input", "pat")
        page.tap("#vr-start")
        page.wait_for_selector("#vr-view .vr-cmp")
        pick_task(page, "colorization", page.tap)
        image_cmp, ids = on_screen(page)
        assert page.get_attribute("#vr-view .vr-cand[data-position='B'] .vr-mark", "data-grid") == "4"
        for row, col in ((3, 0), (1, 2), (3, 0)):  # the third tap removes the first
            page.touchscreen.tap(*cell_point(page, "B", row, col, 4))
        assert shaded(page, "B") == [[1, 2]]
        until_next(page, lambda: page.tap("#vr-a"))
        pick_task(page, "captioning", page.tap)
        caption_cmp, caption_ids = on_screen(page)
        page.tap("#vr-view .vr-cand[data-position='A'] .vr-word[data-i='2']")
        assert struck(page, "A") == [2]
        until_next(page, lambda: page.tap("#vr-b"))
        page.context.close()
    finally:
        demo.close()
    assert stored(store) == [(image_cmp, "a", {str(ids["B"]): {"grid": 4, "cells": [[1, 2]]}}, False),
                             (caption_cmp, "b", {str(caption_ids["A"]): {"words": [2]}}, False)]
