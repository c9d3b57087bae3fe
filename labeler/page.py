"""What the labeling page shows: the comparison, progress and notices as HTML/Markdown, the page's CSS and script
(keys, image zoom, reservation timer, expired-login notice) and the login page served under `--auth`.

Everything here is plain text building, no Gradio: the handlers in labeler/app.py put it on the page.
"""

from __future__ import annotations

import base64
import functools
import html
import json
from pathlib import Path

CSS = """
.vr-cmp {display: flex; flex-direction: column; gap: 10px; width: 100%}
.vr-head {display: flex; gap: 12px; justify-content: space-between; flex-wrap: wrap; font-size: 0.9em; opacity: 0.85}
.vr-grid {display: grid; grid-template-columns: repeat(var(--cols), minmax(0, 1fr)); gap: 12px; width: 100%;
          align-items: start}
.vr-card {display: flex; flex-direction: column; align-items: center; gap: 6px; padding: 8px; box-sizing: border-box;
          border: 1px solid var(--border-color-primary); border-radius: 10px; width: 100%; max-width: 380px;
          justify-self: center}
.vr-card img {width: 100%; height: auto; cursor: zoom-in}
.vr-input {background: var(--background-fill-secondary)}
.vr-pixel {image-rendering: pixelated}
.vr-pos {font-weight: 700; font-size: 1.2em}
.vr-text {font-size: 1.25em; line-height: 1.4; text-align: center; margin: 6px}
.vr-rank {font-size: 0.9em; opacity: 0.8; text-align: center}
.vr-timer.vr-warn {color: var(--error-text-color, #c00); font-weight: 700; opacity: 1}
.vr-done {text-align: center; padding: 24px 8px}
/* Marks: a click on an image candidate shades a cell of its grid, a click on a word strikes it (again: removed). */
.vr-mark-hint {opacity: 0.75}
.vr-mark {position: relative; width: 100%; line-height: 0; touch-action: manipulation}
.vr-card .vr-mark img {cursor: crosshair}
.vr-cells {position: absolute; inset: 0; pointer-events: none}
.vr-mark:hover .vr-cells {background-image: linear-gradient(to right, rgba(255, 255, 255, 0.35) 1px, transparent 1px),
                          linear-gradient(to bottom, rgba(255, 255, 255, 0.35) 1px, transparent 1px);
                          background-size: calc(100% / var(--grid)) calc(100% / var(--grid))}
.vr-cells .vr-cell {position: absolute; background: rgba(220, 38, 38, 0.45); box-sizing: border-box;
                    border: 2px solid rgb(220, 38, 38)}
.vr-word {cursor: pointer; border-radius: 4px; padding: 0 1px; touch-action: manipulation}
.vr-word:hover {background: var(--background-fill-secondary)}
.vr-word.vr-marked {text-decoration: line-through 2px rgb(220, 38, 38); background: rgba(220, 38, 38, 0.18)}
.vr-zoom-btn {font-size: 0.8em; padding: 1px 8px; border-radius: 6px; cursor: zoom-in; opacity: 0.8;
              border: 1px solid var(--border-color-primary); background: var(--background-fill-secondary);
              color: inherit}
.vr-hidden {display: none !important}
#vr-guidelines.vr-new .label-wrap > span:first-child::after {content: " · new here? Tap to read them";
                                                             color: var(--color-accent, #f97316); font-weight: 700}
#vr-guidelines-text {max-height: 40vh; overflow-y: auto}
/* The vote buttons, Skip and Undo stay on screen: a bar fixed to the bottom of the window (room kept below). */
#vr-label {padding-bottom: 120px}
#vr-actions {position: fixed; left: 0; right: 0; bottom: 0; z-index: 50; gap: 6px; margin: 0;
             padding: 8px max(16px, calc((100vw - 1200px) / 2)) 10px; background: var(--background-fill-primary);
             border-top: 1px solid var(--border-color-primary); box-shadow: 0 -2px 12px rgba(0, 0, 0, 0.08)}
#vr-actions .vr-keys {gap: 8px; flex-wrap: nowrap}
#vr-actions .vr-keys button {min-width: 0}
#vr-comment-note {font-size: 0.85em; opacity: 0.8; margin-top: 2px}
.vr-chosen {border: 3px solid var(--color-accent, #f97316)}
.vr-badge {font-size: 0.85em; font-weight: 700; color: var(--color-accent, #f97316)}
.vr-table {border-collapse: collapse; width: 100%; font-size: 0.92em}
.vr-table th {text-align: left; font-weight: 600; padding: 6px 8px;
              border-bottom: 2px solid var(--border-color-primary)}
.vr-table td {padding: 6px 8px; border-bottom: 1px solid var(--border-color-primary); vertical-align: top}
.vr-table-wrap {overflow-x: auto}
.vr-table .vr-narrow {width: 1%; white-space: nowrap}
.vr-table tr[data-comparison] {cursor: pointer}
.vr-table tr[data-comparison]:hover {background: var(--background-fill-secondary)}
.vr-table img {display: inline-block; width: 44px; height: 44px; object-fit: contain; vertical-align: middle;
               margin: 0 4px 0 0; border: 1px solid var(--border-color-primary); image-rendering: pixelated}
.vr-table .vr-who {display: block; margin: 2px 0}
.vr-inspect {display: flex; flex-direction: column; gap: 14px; padding: 8px 0}
.vr-inspect h3 {margin: 0}
.vr-inspect .vr-grid {max-width: 900px}
#vr-zoom {position: fixed; inset: 0; background: rgba(0, 0, 0, 0.85); display: none; z-index: 1000;
          align-items: center; justify-content: center; cursor: zoom-out}
#vr-zoom img {width: min(92vw, 92vh); height: min(92vw, 92vh); object-fit: contain}
#vr-expired {position: fixed; inset: 0; background: rgba(0, 0, 0, 0.6); z-index: 1001; display: flex;
             align-items: center; justify-content: center}
#vr-expired div {background: var(--background-fill-primary, #fff); color: var(--body-text-color, #000);
                 padding: 24px; border-radius: 12px; max-width: 420px; font-size: 1.05em; line-height: 1.5}
#vr-expired button {margin-top: 12px; padding: 8px 16px; font-size: 1em; cursor: pointer}
/* Phones: narrow page margins; the input on a row of its own, half the width; the candidates two per row, each as
   wide as the input; compact task picker and guidelines, so the comparison starts on the first screen. */
@media (max-width: 640px) {
  #vr-view .html-container {padding: 0 !important}
  #vr-top {flex-direction: column !important; gap: 4px}
  #vr-top > * {min-width: 0 !important; width: 100%}
  #vr-guidelines-text h1, #vr-guidelines-text h2 {font-size: 1.15em; margin: 4px 0}
  #vr-guidelines-text h3 {font-size: 1.05em}
  .vr-grid {grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 8px}
  .vr-grid .vr-input {grid-column: 1 / -1; width: calc((100% - 8px) / 2)}
  .vr-card {padding: 4px}
  #vr-guidelines-text {max-height: 20vh}
  #vr-task {padding: 6px !important}
  #vr-task label {padding: 2px 8px !important; min-height: 0 !important}
  #vr-actions {padding: 6px 6px 8px}
  #vr-actions .vr-keys {gap: 6px}
  #vr-actions .vr-keys button {padding: 6px 2px; font-size: 0.9em; min-height: 36px}
  #vr-label {padding-bottom: 110px}
  .vr-table {font-size: 0.85em}
  .vr-table th, .vr-table td {padding: 4px}
  .vr-table .vr-narrow {white-space: normal}
}
"""

# Every shortcut is printed on its button; the key clicks the visible button that carries it, whatever was clicked
# last (a task, the Flag box, any button), except while typing in a text box: in the comment box Enter and Esc end
# the typing (the comment is kept and goes with the vote). Also: marks (a click on a candidate's image cell or caption
# word, sent with the vote), click the input or an enlarge button to zoom, the reservation countdown, a page left
# alone pauses (its reservations go back), a row of the admin's tables opens its comparison, a used download link
# goes away, and a sentence (not bare "Error" badges) when the login is gone.
HEAD_JS = """
<style>
/* Outside Gradio's own container, which its `css=` cannot reach: narrow page margins on phones. */
@media (max-width: 640px) { .gradio-container .main.app {padding-left: 6px !important; padding-right: 6px !important} }
</style>
<script>
(() => {
  const keys = {"1": ["vr-rank-A", "vr-a"], "2": ["vr-rank-B", "vr-b"], "3": ["vr-rank-C", "vr-tie"],
                "4": ["vr-rank-D"], "0": ["vr-bad", "vr-allbad"], "s": ["vr-skip"], "u": ["vr-undo"]};
  const TEXT = new Set(["text", "password", "search", "email", "number", "url", "tel"]);
  const typing = (el) => !!(el && el.closest) && (!!el.closest("textarea, select, [contenteditable='true']")
                         || (el.tagName === "INPUT" && TEXT.has(el.type)));
  const shownEl = (el) => el && el.offsetParent !== null && !el.disabled;
  const press = (id) => { const el = document.getElementById(id); if (el) el.click(); };
  const zoom = () => document.getElementById("vr-zoom");
  const closeZoom = () => { const z = zoom(); if (z) z.style.display = "none"; };
  const commentNote = (text) => {
    const box = document.getElementById("vr-comment");
    if (!box) return;
    let note = document.getElementById("vr-comment-note");
    if (!note) { note = document.createElement("div"); note.id = "vr-comment-note"; box.appendChild(note); }
    note.textContent = text;
  };
  // The comment box: Enter and Esc leave it (the text stays and is saved with the next vote or skip).
  document.addEventListener("keydown", (e) => {
    if (!(e.target.closest && e.target.closest("#vr-comment"))) return;
    if (e.key === "Escape" || (e.key === "Enter" && !e.shiftKey)) {
      e.preventDefault(); e.stopPropagation();
      e.target.blur();
      commentNote(e.target.value.trim() ? "Comment kept: it is saved with your vote; press a key to vote." : "");
    }
  }, true);
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    if (typing(e.target)) return;
    const key = e.key.toLowerCase();
    if (key === "escape") { closeZoom(); if (document.activeElement) document.activeElement.blur(); return; }
    closeZoom();
    if (key === "g") {
      const header = document.querySelector("#vr-guidelines > button, #vr-guidelines .label-wrap");
      if (shownEl(header)) { e.preventDefault(); header.click(); fold = false; }
      const box = document.getElementById("vr-guidelines");
      if (box) box.classList.remove("vr-new");
      return;
    }
    for (const id of keys[key] || []) {
      const el = document.getElementById(id);
      if (shownEl(el)) {
        e.preventDefault();
        if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
        el.click();
        return;
      }
    }
  });
  document.addEventListener("click", (e) => {
    const voted = e.target.closest && e.target.closest("#vr-actions button, #vr-flag input, #vr-task input");
    if (voted && e.detail > 0) setTimeout(() => voted.blur(), 0);  // clicked: a stray Space must not press it again
    const row = e.target.closest && e.target.closest(".vr-table tr[data-comparison]");
    if (row) { window.vrInspect = row.dataset.comparison; press("vr-inspect"); return; }
    const used = e.target.closest && e.target.closest("#vr-download a");
    if (used) {  // the link works once: once clicked it goes (after the browser has started the download)
      setTimeout(() => {
        const gone = document.createElement("span");
        gone.dataset.href = used.getAttribute("href");
        gone.className = "vr-used";
        gone.textContent = "Downloaded " + (used.getAttribute("download") || "the export")
          + ": the link worked once and the file is gone from the server. Export again for a new one.";
        used.replaceWith(gone);
      }, 0);
      return;
    }
    const button = e.target.closest && e.target.closest(".vr-zoom-btn");
    let img = button ? button.parentElement.querySelector(".vr-mark img")
                     : e.target.closest && e.target.closest(".vr-cmp img, .vr-inspect img");
    if (img && !button && img.closest(".vr-mark")) img = null;  // a click on a candidate marks a cell (vrMarks)
    let z = zoom();
    if (z && z.style.display === "flex") { closeZoom(); return; }
    if (!img) return;
    if (!z) {
      z = document.createElement("div"); z.id = "vr-zoom"; z.appendChild(document.createElement("img"));
      document.body.appendChild(z);
    }
    const big = z.querySelector("img");
    big.src = img.src; big.alt = img.alt; big.className = img.className;
    z.style.display = "flex";
  });
  // Marks: where a candidate is wrong (vrlhf/marks.py). A click or tap on an image candidate toggles the cell of its
  // grid under it, on a caption's word toggles the word. They belong to the comparison on screen (its lease token):
  // kept while it stays (a ranking's picks re-render it), dropped when another comparison (or the same one again,
  // after an undo) comes, and sent with the vote: window.vrMarks(token) is the vote events' marks argument.
  let marks = {token: null, by: {}};  // by: candidate id -> {grid, cells: Set("row,col")} or {words: Set(i)}
  const onScreen = () => document.querySelector("#vr-view .vr-cmp");
  const paint = (cmp) => {
    cmp.dataset.painted = marks.token;
    for (const card of cmp.querySelectorAll(".vr-cand[data-candidate]")) {
      const got = marks.by[card.dataset.candidate] || {};
      const cells = card.querySelector(".vr-cells");
      if (cells) {
        const g = got.grid || 1, pct = (v) => (v * 100 / g) + "%";
        cells.replaceChildren(...[...(got.cells || [])].map((key) => {
          const [row, col] = key.split(",").map(Number), d = document.createElement("div");
          d.className = "vr-cell"; d.dataset.cell = key;
          Object.assign(d.style, {top: pct(row), left: pct(col), width: pct(1), height: pct(1)});
          return d;
        }));
      }
      for (const w of card.querySelectorAll(".vr-word")) {
        w.classList.toggle("vr-marked", !!(got.words && got.words.has(w.dataset.i)));
      }
    }
  };
  new MutationObserver(() => {  // a render: a new comparison starts unmarked; the same one keeps its marks
    const cmp = onScreen(), token = cmp ? cmp.dataset.token : null;
    if (token !== marks.token) marks = {token, by: {}};
    if (cmp && cmp.dataset.painted !== token) paint(cmp);
  }).observe(document.body, {childList: true, subtree: true});
  document.addEventListener("click", (e) => {
    const cmp = onScreen(), card = cmp && e.target.closest && e.target.closest(".vr-cand[data-candidate]");
    if (!card || !cmp.contains(card)) return;
    const word = e.target.closest(".vr-word"), area = e.target.closest(".vr-mark");
    if (!word && !area) return;
    if (cmp.dataset.token !== marks.token) marks = {token: cmp.dataset.token, by: {}};
    const got = marks.by[card.dataset.candidate] = marks.by[card.dataset.candidate] || {};
    const toggle = (set, key) => { if (set.has(key)) set.delete(key); else set.add(key); };
    if (word) {
      toggle(got.words = got.words || new Set(), word.dataset.i);
    } else {
      const box = area.querySelector("img").getBoundingClientRect(), g = Number(area.dataset.grid);
      const at = (v, lo, size) => Math.min(g - 1, Math.max(0, Math.floor((v - lo) / size * g)));
      got.grid = g;
      const cell = at(e.clientY, box.top, box.height) + "," + at(e.clientX, box.left, box.width);
      toggle(got.cells = got.cells || new Set(), cell);
    }
    paint(cmp);
  });
  window.vrMarks = (token) => {  // the marks JSON sent with a vote on `token`: {candidate id: marks}, "" for none
    if (!token || token !== marks.token) return "";
    const out = {};
    for (const [id, got] of Object.entries(marks.by)) {
      if (got.cells && got.cells.size) {
        out[id] = {grid: got.grid, cells: [...got.cells].map((key) => key.split(",").map(Number))};
      } else if (got.words && got.words.size) {
        out[id] = {words: [...got.words].map(Number).sort((a, b) => a - b)};
      }
    }
    return Object.keys(out).length ? JSON.stringify(out) : "";
  };
  // Phones: guidelines the server opened (a new task or kind) fold back, so the comparison fits the first screen;
  // their header says they are new until opened.
  let seen = null, fold = false;
  const guidesHeader = () => document.querySelector("#vr-guidelines > button, #vr-guidelines .label-wrap");
  const foldSoon = (frames) => {  // the panel opens in the same update as the view, or a frame or two later
    const text = document.getElementById("vr-guidelines-text"), header = guidesHeader();
    if (!fold) return;
    if (header && text && text.offsetParent !== null) { fold = false; header.click(); return; }
    if (frames > 0) requestAnimationFrame(() => foldSoon(frames - 1)); else fold = false;
  };
  new MutationObserver(() => {
    const cmp = document.querySelector("#vr-view .vr-cmp[data-guides-opened='1']");
    if (!cmp || cmp.dataset.token === seen || window.innerWidth > 640) return;
    seen = cmp.dataset.token; fold = true;
    const box = document.getElementById("vr-guidelines");
    if (box) box.classList.add("vr-new");
    foldSoon(600);
  }).observe(document.body, {childList: true, subtree: true});
  document.addEventListener("click", (e) => {
    const box = e.isTrusted && e.target.closest && e.target.closest("#vr-guidelines");
    if (box) { box.classList.remove("vr-new"); fold = false; }
  }, true);
  // A page left alone (no key, click, touch or scroll for data-idle seconds) pauses: the server gives its
  // reservations back to the queue. The next key or click goes on.
  let last = Date.now(), away = false;
  const active = () => {
    last = Date.now();
    if (away) { away = false; press("vr-back"); }
  };
  for (const ev of ["keydown", "pointerdown", "pointermove", "wheel", "touchstart", "scroll"]) {
    window.addEventListener(ev, active, {capture: true, passive: true});
  }
  // The reservation countdown (seconds left as the server said when it rendered the comparison), and the pause.
  let shown = null, start = 0;
  setInterval(() => {
    const el = document.querySelector("#vr-view .vr-timer");
    if (!el) return;
    const idle = Number(el.dataset.idle || 0);
    if (!away && idle > 0 && Date.now() - last > idle * 1000) { away = true; press("vr-away"); return; }
    if (el.dataset.token !== shown) { shown = el.dataset.token; start = Date.now(); }
    const left = Math.round(Number(el.dataset.ttl) - (Date.now() - start) / 1000);
    const clock = (s) => Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
    if (left <= 0) {
      el.textContent = "Your reservation has run out: your vote still counts unless another annotator has taken "
                       + "this comparison meanwhile.";
      el.classList.add("vr-warn");
    } else if (left <= Number(el.dataset.warn)) {
      el.textContent = "Reserved for you for " + clock(left) + " more: vote now, or it goes back to the queue.";
      el.classList.add("vr-warn");
    } else {
      el.textContent = "Reserved for you for " + clock(left);
      el.classList.remove("vr-warn");
    }
  }, 1000);
  // A server restart or a logout ends the login: say so (and how to go on) instead of showing "Error" badges.
  const expired = () => {
    if (document.getElementById("vr-expired")) return;
    const box = document.createElement("div"); box.id = "vr-expired";
    box.innerHTML = "<div role='alertdialog'><b>Your session has expired.</b><br>The labeling server was restarted "
      + "or you were logged out. Every vote you made is saved. Log in again to continue.<br>"
      + "<button id='vr-login-again'>Log in again</button></div>";
    document.body.appendChild(box);
    box.querySelector("button").onclick = () => { location.href = location.pathname + "?expired=1"; };
  };
  const fetch0 = window.fetch;
  window.fetch = async (...args) => {
    const response = await fetch0(...args);
    const url = String((args[0] && args[0].url) || args[0]);
    if (response.status === 401 && url.includes("/gradio_api/")) expired();
    return response;
  };
})();
</script>
"""


MARK_HINT = "Optional: click where a candidate is wrong to mark it (click again to remove)."


@functools.lru_cache(maxsize=4096)
def data_uri(path: str) -> tuple[str, int]:
    """A PNG inlined as a data URI (no extra request, so nothing loads visibly), with its width."""
    data = Path(path).read_bytes()
    width = int.from_bytes(data[16:20], "big")  # PNG IHDR
    return "data:image/png;base64," + base64.b64encode(data).decode(), width


def image_tag(path: Path, alt: str) -> str:
    uri, width = data_uri(str(path))
    pixel = " class='vr-pixel'" if width < 160 else ""  # small images upscaled without blur
    return f"<img{pixel} src='{uri}' alt='{html.escape(alt)}'>"


def render_view(store, view: dict, rank: list[str], lease_seconds: float, seconds_left: float,
                idle_seconds: float = 0, guides_opened: bool = False, grid: int | None = None) -> str:
    """The comparison on screen: a header (its id, task, reservation timer), then the input and the candidates in
    one row (on phones: the input, then the candidates two per row). `idle_seconds`: the page pauses after that
    long without a key or click (0: never); `guides_opened`: the server opened the guidelines with it (a phone's
    script folds them back and marks their header instead). The candidates can be marked where they are wrong
    (the page's script): a caption's words, an image's cells of a `grid` x `grid` raster (labeler.marking.Grids;
    None: the images are shown, not markable)."""
    v = view
    token = html.escape(v["token"])
    left = max(0, int(seconds_left))
    timer = (f"<span class='vr-timer' data-token='{token}' data-ttl='{left}' data-idle='{idle_seconds:g}' "
             f"data-warn='{int(min(60, lease_seconds / 4))}'>Reserved for you for {left // 60}:{left % 60:02d}</span>")
    parts = [f"<div class='vr-cmp' data-token='{token}' data-comparison='{v['comparison_id']}'"
             f" data-task='{html.escape(v['task'])}' data-k='{v['k']}' data-guides-opened='{int(guides_opened)}'>",
             f"<div class='vr-head'><span>Comparison {v['comparison_id']} · {html.escape(v['task'])}</span>"
             f"<span class='vr-mark-hint'>{MARK_HINT}</span>{timer}</div>",
             comparison_grid(store, v, v["candidates"], mark_grid=grid or 0)]
    if v["k"] > 2:
        ranked = " &gt; ".join(rank) or "press the candidates from best to worst"
        parts.append(f"<div class='vr-rank'>Ranking: {ranked}</div>")
    parts.append("</div>")
    return "".join(parts)


def comparison_grid(store, view: dict, candidates: list[dict], badges: dict[str, str] | None = None,
                    mark_grid: int | None = None) -> str:
    """The input and the candidates, in the order given (each {"position", "text", "image", ...}), as annotators see
    them; `badges` {position: text} marks candidates (the lead's view: what was chosen); with `mark_grid` they can
    be marked (candidate_body)."""
    shown_as = "Input (what the model saw)" if view["input"] != view["image"] else "Input"
    picture = image_tag(store.media_path(view["input"]), shown_as)
    parts = [f"<div class='vr-grid' style='--cols: {len(candidates) + 1}'>",
             f"<div class='vr-card vr-input'><div>{shown_as}</div>{picture}</div>"]
    for c in candidates:
        badge = (badges or {}).get(c["position"])
        parts.append(candidate_card(store, c, badge, mark_grid))
    parts.append("</div>")
    return "".join(parts)


def candidate_card(store, c: dict, badge: str | None = None, mark_grid: int | None = None) -> str:
    """One candidate: its letter, then its text or image (candidate_body); `badge` highlights it."""
    chosen = " vr-chosen" if badge else ""
    note = f"<div class='vr-badge'>{html.escape(badge)}</div>" if badge else ""
    ident = f" data-candidate='{c['candidate_id']}'" if "candidate_id" in c else ""
    body = candidate_body(store, c) if mark_grid is None else markable_body(store, c, mark_grid)
    return (f"<div class='vr-card vr-cand{chosen}' data-position='{c['position']}'{ident}>"
            f"<div class='vr-pos'>{c['position']}</div>{body}{note}</div>")


def candidate_body(store, c: dict) -> str:
    """What a candidate looks like: its image at full quality where it has one (an image output, or a text-stored one
    people see drawn, e.g. boxes over the input), else its text (a caption, whole)."""
    if c["text"] is not None and not c.get("image"):
        return f"<p class='vr-text'>{html.escape(c['text'])}</p>"
    return image_tag(store.media_path(c["image"]), f"candidate {c['position']}")


def markable_body(store, c: dict, grid: int) -> str:
    """A candidate the annotator can mark where it is wrong (the page's script keeps and sends the marks): a
    caption's words each their own element (whitespace-split, as vrlhf/marks.py counts them), an image under an
    overlay of `grid` x `grid` cells, with a button that enlarges it (a click on the image marks a cell). An output
    drawn from text (boxes over the input) has neither words nor cells on screen, and an image without a `grid` (0)
    is not markable: both shown as they are."""
    if c["text"] is not None and not c.get("image"):
        words = " ".join(f"<span class='vr-word' data-i='{i}'>{html.escape(w)}</span>"
                         for i, w in enumerate(c["text"].split()))
        return f"<p class='vr-text vr-words'>{words}</p>"
    if c["text"] is not None or not grid:
        return candidate_body(store, c)
    return (f"<div class='vr-mark' data-grid='{grid}' style='--grid: {grid}'>{candidate_body(store, c)}"
            "<div class='vr-cells'></div></div><button class='vr-zoom-btn' type='button' title='Enlarge this image'>"
            "enlarge</button>")


def render_paused(idle_seconds: float) -> str:
    """The page after `idle_seconds` without a key or click: its reservations went back; any key goes on."""
    return ("<div class='vr-done vr-paused'><h2>Paused: welcome back?</h2><p>Nothing happened on this page for "
            f"{idle_seconds / 60:g} min, so the comparisons reserved for you went back to the queue for others. "
            "Press any key or click anywhere to go on.</p></div>")


def render_done(progress: dict, task: str | None, poll_seconds: float) -> str:
    """The page when nothing is left for this annotator (in the chosen task): why, and what happens next."""
    if task:
        reserved = progress["tasks"].get(task, {}).get("reserved", 0)
    else:
        reserved = progress["remaining"] - progress["available"]
    others = {t: p["available"] for t, p in progress["tasks"].items() if t != task and p["available"]}
    check = f"This page checks for new comparisons every {poll_seconds:g} s by itself; no need to reload."
    if reserved:
        head = "You are done for now."
        body = (f"{plural(reserved, 'comparison')} {'is' if reserved == 1 else 'are'} still reserved by other "
                "annotators; if a reservation runs out it comes back here. " + check)
    else:
        head = "All done: nothing left to label" + (f" in {html.escape(task)}" if task else "") + ". Thank you!"
        body = "New rounds appear here as soon as they are sampled. " + check
    if task and others:
        body += " Other tasks still have work for you: " + ", ".join(
            f"{html.escape(t)} ({n})" for t, n in sorted(others.items())) + ": pick one above."
    return f"<div class='vr-done'><h2>{head}</h2><p>{body}</p></div>"


def render_progress(name: str, progress: dict, task: str | None) -> str:
    """One line: per task the annotator's standing votes and what is left for them; labels per minute."""
    parts = []
    for t, p in progress["tasks"].items():
        if task and t != task:
            continue
        left = f"{p['available']} left" + (f" (+{p['reserved']} reserved by others)" if p["reserved"] else "")
        parts.append(f"{html.escape(t)}: {p['count']} labelled, {left}")
    return f"**{html.escape(name)}** · " + " · ".join(parts or ["nothing to label yet"]) + \
        f" · {progress['per_min']:.1f} labels/min"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>visual-rlhf labeler: log in</title>
<style>
body {font-family: system-ui, sans-serif; display: flex; justify-content: center; padding: 8vh 16px; margin: 0;
      background: #f6f6f7; color: #111}
@media (prefers-color-scheme: dark) {body {background: #151517; color: #eee} form {background: #222226 !important}
  input {background: #111; color: #eee; border-color: #444 !important}}
form {background: #fff; padding: 28px; border-radius: 14px; width: 100%; max-width: 380px;
      box-shadow: 0 2px 12px rgba(0,0,0,.08); display: flex; flex-direction: column; gap: 10px}
h1 {font-size: 1.3em; margin: 0 0 6px}
label {font-size: .9em; display: flex; flex-direction: column; gap: 4px}
input {font-size: 1.05em; padding: 9px; border-radius: 8px; border: 1px solid #bbb}
button {font-size: 1.05em; padding: 10px; border-radius: 8px; border: 0; background: #f97316; color: #fff;
        cursor: pointer; margin-top: 6px}
#message {min-height: 1.4em; font-size: .95em; line-height: 1.4}
#message.error {color: #c2410c}
</style></head>
<body><form id="login" novalidate>
<h1>visual-rlhf labeler</h1>
<div>Log in with the name and password your project lead gave you.</div>
<label>Name <input id="username" name="username" autocomplete="username" autofocus></label>
<label>Password <input id="password" name="password" type="password" autocomplete="current-password"></label>
<div id="message" role="alert">__NOTICE__</div>
<button type="submit" id="submit">Log in</button>
</form>
<script>
const form = document.getElementById("login"), message = document.getElementById("message");
const say = (text, error) => { message.textContent = text; message.className = error ? "error" : ""; };
const SENTENCES = __SENTENCES__;
form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = form.username.value.trim(), password = form.password.value;
  if (!name && !password) return say(SENTENCES.both, true);
  if (!name) return say(SENTENCES.name, true);
  if (!password) return say(SENTENCES.password, true);
  say("Checking…", false);
  const body = new FormData(); body.append("username", name); body.append("password", password);
  let response;
  try { response = await fetch("login", {method: "POST", body}); }
  catch (err) { return say(SENTENCES.offline, true); }
  if (response.ok) { location.href = location.pathname; return; }
  form.password.value = "";
  if (response.status === 429) return say(SENTENCES.limited, true);
  if (response.status === 400) return say(SENTENCES.wrong, true);
  say(SENTENCES.other.replace("{status}", response.status), true);
});
</script></body></html>
"""

LOGIN_SENTENCES = {
    "both": "Type your name and your password, then press Log in.",
    "name": "Type your name (as your project lead wrote it), then press Log in.",
    "password": "Type your password too: a login needs both your name and your password.",
    "wrong": "That name and password do not match. Check both (the password is case-sensitive) and try again; "
             "after 5 failed tries a name is locked for 5 minutes.",
    "limited": "Too many failed logins for this name or from this address: wait 5 minutes and try again, or ask "
               "your project lead to set a new password.",
    "offline": "The labeling server is not answering. Check your connection and try again in a moment.",
    "other": "The server refused the login (HTTP {status}). Try again in a moment; if it keeps happening, tell your "
             "project lead.",
}
EXPIRED_NOTICE = ("Your session has expired: the labeling server was restarted or you were logged out. Every vote "
                  "you made is saved. Log in again to continue.")


def login_page(expired: bool = False) -> bytes:
    """The login page (under --auth): every refusal is a sentence that says what to do next."""
    notice = html.escape(EXPIRED_NOTICE) if expired else ""
    return (LOGIN_PAGE.replace("__NOTICE__", notice)
            .replace("__SENTENCES__", json.dumps(LOGIN_SENTENCES))).encode()
