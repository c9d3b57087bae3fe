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

HOW_TO = """### Buttons and keys
Look at the input first, then at the candidates: pick the one that is the better output **for this input**.

- **A better [1]**, **B better [2]**: that candidate is better, even if only a little. Most comparisons have a winner.
- **Tie [3]**: both are about equally good, or equally flawed. Use it when you really cannot choose.
- **Both bad [0]**: neither is acceptable (wrong, unreadable, unrelated to the input). No preference is recorded.
- **Skip [S]**: you cannot judge this one (you are unsure what the input shows). It goes to another annotator.
- **Undo [U]**: takes back your last vote, or your last pick in a ranking, and shows that comparison again.
- With 3 or 4 candidates, press them from best to worst (**A [1]** … **D [4]**); the last one is implied.
  **All bad [0]** when none is acceptable.
- **Comment** and **Flag**: a note for the project lead (a broken image, an offensive output, a comparison that makes
  no sense); it is saved with your next vote or skip.
- Click an image to enlarge it (click again or press Esc to close). **G** opens and closes these guidelines.
- Each comparison is reserved for you while it is on screen; the timer above it shows for how long. When it runs out
  your vote still counts unless someone else has taken the comparison meanwhile.
"""

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
#vr-guidelines-text {max-height: 45vh; overflow-y: auto}
#vr-zoom {position: fixed; inset: 0; background: rgba(0, 0, 0, 0.85); display: none; z-index: 1000;
          align-items: center; justify-content: center; cursor: zoom-out}
#vr-zoom img {width: min(92vw, 92vh); height: min(92vw, 92vh); object-fit: contain}
#vr-expired {position: fixed; inset: 0; background: rgba(0, 0, 0, 0.6); z-index: 1001; display: flex;
             align-items: center; justify-content: center}
#vr-expired div {background: var(--background-fill-primary, #fff); color: var(--body-text-color, #000);
                 padding: 24px; border-radius: 12px; max-width: 420px; font-size: 1.05em; line-height: 1.5}
#vr-expired button {margin-top: 12px; padding: 8px 16px; font-size: 1em; cursor: pointer}
/* Phones: the input on a row of its own, half the width; the candidates two per row, each as wide as the input. */
@media (max-width: 640px) {
  .vr-grid {grid-template-columns: repeat(2, minmax(0, 1fr))}
  .vr-grid .vr-input {grid-column: 1 / -1; width: calc((100% - 12px) / 2)}
  .vr-keys {flex-wrap: wrap !important}
  .vr-keys > * {flex: 1 1 calc(50% - 8px) !important; min-width: calc(50% - 8px) !important}
}
"""

# Every shortcut is printed on its button; the key clicks the visible button that carries it. Also: click an image
# to zoom, the reservation countdown, and a sentence (not bare "Error" badges) when the login is gone.
HEAD_JS = """
<script>
(() => {
  const keys = {"1": ["vr-rank-A", "vr-a"], "2": ["vr-rank-B", "vr-b"], "3": ["vr-rank-C", "vr-tie"],
                "4": ["vr-rank-D"], "0": ["vr-bad", "vr-allbad"], "s": ["vr-skip"], "u": ["vr-undo"]};
  const zoom = () => document.getElementById("vr-zoom");
  const closeZoom = () => { const z = zoom(); if (z) z.style.display = "none"; };
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    if (e.target.closest && e.target.closest("input, textarea, select, [contenteditable]")) return;
    const key = e.key.toLowerCase();
    if (key === "escape") { closeZoom(); return; }
    closeZoom();
    if (key === "g") {
      const header = document.querySelector("#vr-guidelines > button, #vr-guidelines .label-wrap");
      if (header) { e.preventDefault(); header.click(); }
      return;
    }
    for (const id of keys[key] || []) {
      const el = document.getElementById(id);
      if (el && el.offsetParent !== null && !el.disabled) { e.preventDefault(); el.click(); return; }
    }
  });
  document.addEventListener("click", (e) => {
    const img = e.target.closest && e.target.closest(".vr-cmp img");
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
  // The reservation countdown: seconds left as the server said when it rendered the comparison.
  let shown = null, start = 0;
  setInterval(() => {
    const el = document.querySelector("#vr-view .vr-timer");
    if (!el) return;
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


def render_view(store, view: dict, rank: list[str], lease_seconds: float, seconds_left: float) -> str:
    """The comparison on screen: a header (its id, task, reservation timer), then the input and the candidates in
    one row (on phones: the input, then the candidates two per row)."""
    v = view
    shown_as = "Input (what the model saw)" if v["input"] != v["image"] else "Input"
    token = html.escape(v["token"])
    left = max(0, int(seconds_left))
    timer = (f"<span class='vr-timer' data-token='{token}' data-ttl='{left}' "
             f"data-warn='{int(min(60, lease_seconds / 4))}'>Reserved for you for {left // 60}:{left % 60:02d}</span>")
    parts = [f"<div class='vr-cmp' data-token='{token}' data-comparison='{v['comparison_id']}'"
             f" data-task='{html.escape(v['task'])}'>",
             f"<div class='vr-head'><span>Comparison {v['comparison_id']} · {html.escape(v['task'])}</span>{timer}"
             "</div>",
             f"<div class='vr-grid' style='--cols: {v['k'] + 1}'>",
             f"<div class='vr-card vr-input'><div>{shown_as}</div>{image_tag(store.media_path(v['input']), shown_as)}"
             "</div>"]
    for c in v["candidates"]:
        body = (f"<p class='vr-text'>{html.escape(c['text'])}</p>" if c["text"] is not None
                else image_tag(store.media_path(c["image"]), f"candidate {c['position']}"))
        parts.append(f"<div class='vr-card vr-cand'><div class='vr-pos'>{c['position']}</div>{body}</div>")
    parts.append("</div>")
    if v["k"] > 2:
        ranked = " &gt; ".join(rank) or "press the candidates from best to worst"
        parts.append(f"<div class='vr-rank'>Ranking: {ranked}</div>")
    parts.append("</div>")
    return "".join(parts)


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


def guidelines_markdown(task: str | None, guidelines: dict[str | None, str]) -> str:
    """The guidelines for `task`: the project's (per task, or for all tasks under None), then the keys."""
    text = guidelines.get(task) or guidelines.get(None)
    if text is None:
        text = ("*This project has no written guidelines"
                + (f" for {task}" if task else "") + ": ask your project lead what counts as better.*")
    return text.strip() + "\n\n---\n\n" + HOW_TO


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
