"""Key -> next comparison in a real Chromium, votes with marks against votes without (issue 19's "marks cost
annotators little"): one annotator labels colorization pairs (64 px images, the 8x8 grid) and caption pairs; every
other vote first clicks two cells of an image or two words of a caption.

    python bench/bench_marks_browser.py                  # 40 votes, 1 s of think time; prints p50/p95 per kind
    python bench/bench_marks_browser.py --votes 20 --think 0

Timed inside the page, as tests/labeler/test_annotator_day.py does: from the key's keydown to the mutation that puts
the next comparison on screen (the script's own polling is not counted). The app runs in this process (`serve`),
with SQLite; the machine's load average is printed with the numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "labeler"))
CHROMIUM = "/usr/bin/chromium"
PROBE = """() => {
  window.vrLatency = []; let down = null;
  document.addEventListener('keydown', e => { if ('12'.includes(e.key)) down = performance.now(); }, true);
  new MutationObserver(() => {
    const e = document.querySelector('#vr-view .vr-cmp');
    const now = e && e.dataset.token;
    if (down !== null && now && now !== window.vrShown) {
      window.vrLatency.push(performance.now() - down); down = null;
    }
    window.vrShown = now;
  }).observe(document.body, {childList: true, subtree: true});
}"""
NEXT = ("b => { const e = document.querySelector('#vr-view .vr-cmp');"
        " return !e || (e.dataset.comparison + ':' + e.dataset.token) !== b; }")


def mark_two(page) -> None:
    """Two marks on candidate A: two cells of its image, or its first two words."""
    card = "#vr-view .vr-cand[data-position='A']"
    if page.locator(f"{card} .vr-word").count():
        page.click(f"{card} .vr-word[data-i='0']")
        page.click(f"{card} .vr-word[data-i='1']")
        return
    img = page.locator(f"{card} .vr-mark img")
    img.evaluate("e => e.scrollIntoView({block: 'center'})")
    box = img.bounding_box()
    for row, col in ((1, 2), (5, 6)):
        page.mouse.click(box["x"] + (col + 0.5) * box["width"] / 8, box["y"] + (row + 0.5) * box["height"] / 8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=40, help="votes in all (every other one with two marks)")
    parser.add_argument("--think", type=float, default=1.0, help="seconds the annotator looks before each vote")
    args = parser.parse_args(argv)

    from labfix import fill, free_port
    from playwright.sync_api import sync_playwright

    from labeler.app import serve
    from labeler.store import Store

    folder = Path(tempfile.mkdtemp(prefix="bench-marks-browser-"))
    store = Store(folder / "labels.sqlite")
    fill(store, args.votes // 2 + 2, k=2, task="colorization", seed=1)
    fill(store, args.votes // 2 + 2, k=2, seed=2)
    demo, url = serve(store, port=free_port(), block=False, quiet=True)
    kinds: list[bool] = []  # per vote: with marks?
    load = [os.getloadavg()[0]]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.fill("#vr-name textarea, #vr-name input", "bench")
            page.click("#vr-start")
            page.wait_for_selector("#vr-view .vr-cmp")
            page.evaluate(PROBE)
            for i in range(args.votes):
                with_marks = i % 2 == 1
                time.sleep(args.think)
                if with_marks:
                    mark_two(page)
                before = page.evaluate("() => { const e = document.querySelector('#vr-view .vr-cmp');"
                                       " return e.dataset.comparison + ':' + e.dataset.token; }")
                page.keyboard.press("1")
                page.wait_for_function(NEXT, arg=before, timeout=10_000)
                kinds.append(with_marks)
            latencies = page.evaluate("window.vrLatency")
            browser.close()
    finally:
        demo.close()
    load.append(os.getloadavg()[0])
    votes = store.votes()
    assert [v["marks"] is not None for v in votes] == kinds, "a vote's marks were lost or leaked"
    for with_marks in (False, True):
        xs = [ms for ms, kind in zip(latencies, kinds) if kind == with_marks]
        p95 = statistics.quantiles(xs, n=20)[-1]
        print(f"{'with marks' if with_marks else 'no marks  '}: {len(xs)} votes, key -> next comparison p50 "
              f"{statistics.median(xs):.0f} ms, p95 {p95:.0f} ms")
    print(f"think {args.think:g} s; load average {load[0]:.1f} -> {load[1]:.1f} ({os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
