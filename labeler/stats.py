"""Labeling statistics for the admin: per task the votes, overlap and inter-annotator agreement (Krippendorff's
alpha); per annotator counts, speed, left/right bias and agreement with the others; the comparisons annotators
disagreed on and every comment and flag, as HTML tables that show what was compared (thumbnails, whole captions,
the chosen candidate by the letter its annotator saw); a row opens the comparison as its annotators saw it
(`inspect_html`).
"""

from __future__ import annotations

import html
import math
from collections import Counter
from itertools import combinations

import krippendorff
import numpy as np
import pandas as pd

from labeler import page, views
from labeler.leases import POSITIONS
from labeler.store import Store

ALPHA_EXPLAINED = ("Krippendorff's alpha measures how often annotators who judged the same comparison agreed, "
                   "corrected for the agreement chance alone would give: 1 = always agree, 0 = no better than "
                   "chance, below 0 = systematic disagreement (0.67 is a common floor for usable labels, 0.8 for "
                   "reliable ones). It needs comparisons judged by two or more people (`--overlap`).")
# Column names a project lead reads without the docs (the per-annotator columns, then what each one means).
PER_ANNOTATOR = ["annotator", "labels", "median seconds per label", "left chosen (of A/B)", "judgments shared",
                 "agreement with others", "flags"]
PER_ANNOTATOR_EXPLAINED = ("*left chosen*: the share of their A/B decisions that went to the left candidate (50% = "
                           "no position bias); *judgments shared*: how many of their judgments another annotator "
                           "also made; *agreement with others*: the share of those that match.")
LABELS = ["task", "choice", "votes", "share of the task's votes"]
CHOICE_NAMES = {"a": "A better", "b": "B better", "tie": "Tie", "both_bad": "Both bad", "skip": "Skip",
                "rank": "Ranking"}
WIDE = {"Who chose what", "Chose", "Comment"}  # columns of the lead's tables that wrap; the others stay narrow
MAX_ROWS = 200  # rows of the disagreement and comment tables (newest first)


def canonical(vote: dict) -> str | None:
    """The judgment independent of the shown order: which candidate id won (or tie / both_bad); None for skips."""
    choice = vote["choice"]
    if choice in ("tie", "both_bad"):
        return choice
    if choice in ("a", "b"):
        return str(vote["shown"][0 if choice == "a" else 1])
    if choice == "rank":
        return str(vote["ranking"][0])  # agreement on the winner
    return None


def judgments(votes: list[dict]) -> dict[int, dict[str, str]]:
    """{comparison id: {annotator: canonical judgment}} over the votes that judge (not skips)."""
    by_cmp: dict[int, dict[str, str]] = {}
    for v in votes:
        if canonical(v) is not None:
            by_cmp.setdefault(v["comparison_id"], {})[v["annotator"]] = canonical(v)
    return by_cmp


def agreement(votes: list[dict]) -> tuple[float | None, int]:
    """Krippendorff's alpha (nominal) over comparisons judged by two or more annotators; (alpha, n units)."""
    units = {c: js for c, js in judgments(votes).items() if len(js) >= 2}
    if not units:
        return None, 0
    coders = sorted({a for js in units.values() for a in js})
    values = sorted({x for js in units.values() for x in js.values()})
    if len(values) < 2:
        return 1.0, len(units)  # everyone agreed on one value: alpha is undefined, agreement is perfect
    code = {x: i for i, x in enumerate(values)}
    data = np.full((len(coders), len(units)), np.nan)
    for j, js in enumerate(units.values()):
        for a, x in js.items():
            data[coders.index(a), j] = code[x]
    alpha = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    return (None if math.isnan(alpha) else float(alpha)), len(units)


def pairwise_agreement(votes: list[dict]) -> dict[str, tuple[int, int]]:
    """{annotator: (pairs agreed, pairs)} over every other annotator who judged the same comparison."""
    out: dict[str, list[int]] = {}
    for js in judgments(votes).values():
        for (a, x), (b, y) in combinations(sorted(js.items()), 2):
            for name in (a, b):
                got = out.setdefault(name, [0, 0])
                got[0] += x == y
                got[1] += 1
    return {name: (agreed, n) for name, (agreed, n) in out.items()}


def compute(store: Store) -> dict:
    """Standing (not retracted) votes summarised per task and per annotator; DataFrames ready for display."""
    every = store.votes()
    votes = [v for v in every if v["retracted_at"] is None]
    tasks = {}
    for task, n_comparisons in store.tasks().items():
        mine = [v for v in votes if v["task"] == task]
        alpha, units = agreement(mine)
        judged = len(judgments(mine))
        decisive = [v for v in mine if v["choice"] in ("a", "b")]
        tasks[task] = {"votes": len(mine), "comparisons": n_comparisons, "judged": judged, "overlap_units": units,
                       "overlap_share": units / judged if judged else None, "alpha": alpha,
                       "left_share": sum(v["choice"] == "a" for v in decisive) / len(decisive) if decisive else None,
                       "marks_share": sum(bool(v.get("marks")) for v in mine) / len(mine) if mine else None}
    return {"n_votes": len(votes), "tasks": tasks, "per_annotator": per_annotator(votes),
            "labels": label_mix(votes), "disagreements": disagreements(store, votes), "notes": notes(store, every)}


def per_annotator(votes: list[dict]) -> pd.DataFrame:
    if not votes:
        return pd.DataFrame(columns=PER_ANNOTATOR)
    df = pd.DataFrame(votes, columns=["annotator", "choice", "elapsed_ms", "flagged"])
    decisive = df[df.choice.isin(["a", "b"])]
    left = decisive.groupby("annotator").choice.apply(lambda s: float((s == "a").mean()))
    per = df.groupby("annotator").agg(labels=("choice", "size"), median=("elapsed_ms", "median"),
                                      flags=("flagged", "sum"))
    out = pd.DataFrame({"annotator": per.index, "labels": per["labels"].to_numpy(),
                        "median seconds per label": (per["median"] / 1000).round(1).to_numpy()})
    out["left chosen (of A/B)"] = [None if pd.isna(x) else f"{x:.0%}" for x in left.reindex(per.index)]
    pairs = pairwise_agreement(votes)
    out["judgments shared"] = [pairs.get(a, (0, 0))[1] for a in per.index]
    out["agreement with others"] = [f"{pairs[a][0] / pairs[a][1]:.0%}" if a in pairs else None for a in per.index]
    out["flags"] = per["flags"].astype(int).to_numpy()
    return out[PER_ANNOTATOR]


def label_mix(votes: list[dict]) -> pd.DataFrame:
    if not votes:
        return pd.DataFrame(columns=LABELS)
    mix = Counter((v["task"], v["choice"]) for v in votes)
    per_task = Counter(v["task"] for v in votes)
    return pd.DataFrame([{"task": t, "choice": CHOICE_NAMES.get(c, c), "votes": n,
                          "share of the task's votes": f"{n / per_task[t]:.0%}"}
                         for (t, c), n in sorted(mix.items())], columns=LABELS)


def disagreements(store: Store, votes: list[dict]) -> str:
    """Comparisons whose annotators judged differently, newest first, as an HTML table: the input, and per
    annotator what they chose (the letter they saw, the whole caption or a thumbnail, the policy); a row opens the
    comparison."""
    by_cmp = {c: js for c, js in judgments(votes).items() if len(set(js.values())) > 1}
    if not by_cmp:
        return table([], ["Comparison", "Task", "Input", "Who chose what", "Last vote"],
                      "No disagreements yet: every comparison judged by two or more people got the same answer.")
    mine = {}  # (comparison, annotator) -> their standing judging vote (the one `judgments` kept: the last)
    for v in votes:
        if canonical(v) is not None:
            mine[v["comparison_id"], v["annotator"]] = v
    ids = sorted(by_cmp, reverse=True)
    shown = ids[:MAX_ROWS]
    cands = store.candidates({cid for c in shown for (cc, _), v in mine.items() if cc == c for cid in v["shown"]})
    rows = []
    for c in shown:
        ours = [mine[c, a] for a in sorted(by_cmp[c])]
        first = ours[0]
        who = "".join(f"<span class='vr-who'>{chose_html(store, v, cands)}</span>" for v in ours)
        rows.append((c, [str(c), html.escape(first["task"]), thumb(store, first["input"], "input"), who,
                         max(v["created_at"] for v in ours)[:16].replace("T", " ")]))
    more = f"Showing the newest {MAX_ROWS} of {len(ids)}." if len(ids) > MAX_ROWS else ""
    return table(rows, ["Comparison", "Task", "Input", "Who chose what", "Last vote"], more)


def notes(store: Store, votes: list[dict]) -> str:
    """Every vote with a comment or a flag (retracted ones too, marked), newest first, as an HTML table: what the
    annotator chose (letter and content), the flag and the comment; a row opens the comparison."""
    noted = [v for v in reversed(votes) if v["comment"] or v["flagged"]]
    columns = ["Comparison", "Task", "Input", "Annotator", "Chose", "Flagged", "Comment", "When"]
    if not noted:
        return table([], columns, "No comments or flags yet.")
    shown = noted[:MAX_ROWS]
    cands = store.candidates({cid for v in shown for cid in v["shown"]})
    rows = [(v["comparison_id"], [str(v["comparison_id"]), html.escape(v["task"]), thumb(store, v["input"], "input"),
                                  html.escape(v["annotator"]),
                                  chose_html(store, v, cands, who=False) + (" <i>(undone)</i>" if v["retracted_at"]
                                                                            else ""),
                                  "flagged" if v["flagged"] else "", html.escape(v["comment"] or ""),
                                  v["created_at"][:16].replace("T", " ")])
            for v in shown]
    more = f"Showing the newest {MAX_ROWS} of {len(noted)}." if len(noted) > MAX_ROWS else ""
    return table(rows, columns, more)


def letters(v: dict) -> list[str]:
    """The candidates a vote chose, as letters of the order its annotator saw ([] for tie, both bad, skip)."""
    if v["choice"] in ("a", "b"):
        return [v["choice"].upper()]
    if v["choice"] == "rank":
        return [POSITIONS[v["shown"].index(cid)] for cid in v["ranking"]]
    return []


def chose_html(store: Store, v: dict, cands: dict[int, dict], who: bool = True) -> str:
    """`alice chose B: “a red circle”` (the letter she saw, the whole caption or a thumbnail, the policy); a ranking
    names its order and shows its best; tie, both bad and skip as words."""
    name = f"<b>{html.escape(v['annotator'])}</b> " if who else ""
    picked = letters(v)
    if not picked:
        return f"{name}{CHOICE_NAMES.get(v['choice'], v['choice'])}"
    best = cands.get(v["shown"][POSITIONS.index(picked[0])], {})
    if best.get("text") is not None and not best.get("image"):  # an image, where there is one, is what people saw
        content = f"“{html.escape(best['text'])}”"
    elif best.get("image"):
        content = thumb(store, best["image"], f"candidate {picked[0]}")
    else:
        content = ""
    policy = f" <small>({html.escape(best['policy'])})</small>" if best.get("policy") else ""
    if len(picked) > 1:
        return f"{name}ranked {' &gt; '.join(picked)}, best {picked[0]}: {content}{policy}"
    return f"{name}chose {picked[0]}: {content}{policy}"


def thumb(store: Store, path: str, alt: str) -> str:
    return f"<img src='{page.data_uri(str(store.media_path(path)))[0]}' alt='{html.escape(alt)}'>"


def table(rows: list[tuple[int, list[str]]], columns: list[str], note: str = "") -> str:
    """An HTML table whose rows open their comparison when clicked (labeler/page.py's script); cells are HTML."""
    narrow = ["" if c in WIDE else " class='vr-narrow'" for c in columns]  # the text columns take the width
    head = "".join(f"<th{n}>{html.escape(c)}</th>" for c, n in zip(columns, narrow))
    body = "".join(f"<tr data-comparison='{cid}' title='Open comparison {cid} as its annotators saw it'>"
                   + "".join(f"<td{n}>{cell}</td>" for cell, n in zip(cells, narrow)) + "</tr>" for cid, cells in rows)
    hint = ("Letters are as each annotator saw the candidates (every lease shuffles them). Click a row to see the "
            "comparison as its annotators saw it. ") if rows else ""
    return (f"<div class='vr-table-wrap'><table class='vr-table'><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
            f"</table></div><p class='vr-table-note'>{hint}{html.escape(note)}</p>")


def inspect_html(store: Store, comparison_id: int) -> str:
    """Comparison `comparison_id` as each of its annotators saw it (their order of the candidates, their letters),
    with what they chose marked, their comment, flag and time; unvoted: as stored."""
    cmp = views.comparison(store, comparison_id)
    if cmp is None:
        return f"<p>There is no comparison {int(comparison_id)}.</p>"
    by_id = {c["candidate_id"]: c for c in cmp["candidates"]}
    mine = [v for v in store.votes() if v["comparison_id"] == comparison_id]
    head = (f"<h3>Comparison {cmp['comparison_id']} · {html.escape(cmp['task'])} · input {html.escape(cmp['item_id'])}"
            f" · round {cmp['round_id']} ({html.escape(cmp['policy'])})</h3>")
    parts = ["<div class='vr-inspect'>", head]
    if not mine:
        parts.append("<p>Nobody has voted on it yet; the candidates in their stored order:</p>")
        order = [{"position": POSITIONS[i]} | c for i, c in enumerate(cmp["candidates"])]
        parts.append(page.comparison_grid(store, cmp, order))
    for v in mine:
        order = [{"position": POSITIONS[i]} | by_id[cid] for i, cid in enumerate(v["shown"])]
        picked = letters(v)
        badges = ({p: "chosen" for p in picked} if len(picked) == 1 else
                  {p: f"ranked {n + 1}" for n, p in enumerate(picked)})
        said = CHOICE_NAMES.get(v["choice"], v["choice"]) + (f" {' > '.join(picked)}" if len(picked) > 1 else "")
        extra = [f"{v['elapsed_ms'] / 1000:.1f} s", v["created_at"][:19].replace("T", " ")]
        extra += ["flagged"] * bool(v["flagged"]) + ["undone"] * bool(v["retracted_at"])
        comment = f"<div>Comment: “{html.escape(v['comment'])}”</div>" if v["comment"] else ""
        parts.append(f"<div><b>{html.escape(v['annotator'])}</b> saw it in this order and chose <b>{html.escape(said)}"
                     f"</b> <small>({' · '.join(extra)})</small>{comment}</div>")
        parts.append(page.comparison_grid(store, cmp, order, badges))
    parts.append("</div>")
    return "".join(parts)


def summary_markdown(s: dict, overlap: int = 1, overlap_fraction: float = 1.0) -> str:
    """Per task: votes, comparisons, overlap and alpha; then what alpha means and how this server assigns."""
    def pct(x):
        return "n/a" if x is None else f"{x:.0%}"

    lines = [f"**{s['n_votes']}** standing votes.", "",
             "| task | votes | comparisons judged | judged by ≥ 2 (overlap) | Krippendorff's alpha | left chosen "
             "| with marks |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for task, t in s["tasks"].items():
        alpha = "n/a" if t["alpha"] is None else f"{t['alpha']:.3f}"
        lines.append(f"| {task} | {t['votes']} | {t['judged']} of {t['comparisons']} | {t['overlap_units']} "
                     f"({pct(t['overlap_share'])}) | {alpha} | {pct(t['left_share'])} | {pct(t['marks_share'])} |")
    plan = (f"This server sends {overlap} annotators to {overlap_fraction:.0%} of the comparisons and one to the "
            "rest" if overlap > 1 and overlap_fraction > 0 else
            "This server sends each comparison to one annotator (start it with `--overlap 3 --overlap-fraction "
            "0.1` to measure agreement)")
    lines += ["", ALPHA_EXPLAINED, f"{plan}. *Left chosen*: the share of A/B decisions that went to the left "
              "candidate (50% = no position bias). *With marks*: the share of votes that marked where a candidate "
              "is wrong."]
    return "\n".join(lines)
