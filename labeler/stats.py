"""Labeling statistics for the admin: per task the votes, overlap and inter-annotator agreement (Krippendorff's
alpha); per annotator counts, speed, left/right bias and agreement with the others; the comparisons annotators
disagreed on; every comment and flag.
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import combinations

import krippendorff
import numpy as np
import pandas as pd

from labeler.store import Store

ALPHA_EXPLAINED = ("Krippendorff's alpha measures how often annotators who judged the same comparison agreed, "
                   "corrected for the agreement chance alone would give: 1 = always agree, 0 = no better than "
                   "chance, below 0 = systematic disagreement (0.67 is a common floor for usable labels, 0.8 for "
                   "reliable ones). It needs comparisons judged by two or more people (`--overlap`).")
PER_ANNOTATOR = ["annotator", "labels", "median_s", "left_share", "shared", "agreement", "flagged"]
DISAGREEMENTS = ["comparison", "task", "item", "judgments"]
NOTES = ["comparison", "task", "item", "annotator", "choice", "flagged", "comment", "when"]
LABELS = ["task", "choice", "count", "share"]


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
                       "left_share": sum(v["choice"] == "a" for v in decisive) / len(decisive) if decisive else None}
    return {"n_votes": len(votes), "tasks": tasks, "per_annotator": per_annotator(votes),
            "labels": label_mix(votes), "disagreements": disagreements(store, votes), "notes": notes(every)}


def per_annotator(votes: list[dict]) -> pd.DataFrame:
    if not votes:
        return pd.DataFrame(columns=PER_ANNOTATOR)
    df = pd.DataFrame(votes, columns=["annotator", "choice", "elapsed_ms", "flagged"])
    decisive = df[df.choice.isin(["a", "b"])]
    left = decisive.groupby("annotator").choice.apply(lambda s: float((s == "a").mean()))
    per = df.groupby("annotator").agg(labels=("choice", "size"), median_s=("elapsed_ms", "median"),
                                      flagged=("flagged", "sum"))
    per["median_s"] = (per["median_s"] / 1000).round(2)
    per["left_share"] = left.reindex(per.index).round(3)
    pairs = pairwise_agreement(votes)
    per["shared"] = [pairs.get(a, (0, 0))[1] for a in per.index]
    per["agreement"] = [round(pairs[a][0] / pairs[a][1], 3) if a in pairs else None for a in per.index]
    per["flagged"] = per["flagged"].astype(int)
    return per.reset_index()[PER_ANNOTATOR]


def label_mix(votes: list[dict]) -> pd.DataFrame:
    if not votes:
        return pd.DataFrame(columns=LABELS)
    mix = Counter((v["task"], v["choice"]) for v in votes)
    per_task = Counter(v["task"] for v in votes)
    return pd.DataFrame([{"task": t, "choice": c, "count": n, "share": round(n / per_task[t], 3)}
                         for (t, c), n in sorted(mix.items())], columns=LABELS)


def disagreements(store: Store, votes: list[dict]) -> pd.DataFrame:
    """Comparisons whose annotators judged differently, newest first: who said what (the winner's text when the
    candidates are text)."""
    by_cmp = {c: js for c, js in judgments(votes).items() if len(set(js.values())) > 1}
    if not by_cmp:
        return pd.DataFrame(columns=DISAGREEMENTS)
    first = {}
    for v in votes:
        first.setdefault(v["comparison_id"], v)
    ids = {int(x) for js in by_cmp.values() for x in js.values() if x.isdigit()}
    cands = store.candidates(ids)

    def said(x: str) -> str:
        if not x.isdigit():
            return x.replace("_", " ")
        c = cands.get(int(x), {})
        text = c.get("text")
        return f"'{text[:60]}'" if text else f"candidate {x} ({c.get('policy', '?')})"

    rows = [{"comparison": c, "task": first[c]["task"], "item": first[c]["item_id"],
             "judgments": "; ".join(f"{a}: {said(x)}" for a, x in sorted(js.items()))}
            for c, js in sorted(by_cmp.items(), reverse=True)]
    return pd.DataFrame(rows, columns=DISAGREEMENTS)


def notes(votes: list[dict]) -> pd.DataFrame:
    """Every vote with a comment or a flag (retracted ones too, marked), newest first."""
    rows = [{"comparison": v["comparison_id"], "task": v["task"], "item": v["item_id"], "annotator": v["annotator"],
             "choice": v["choice"] + (" (undone)" if v["retracted_at"] else ""), "flagged": v["flagged"],
             "comment": v["comment"] or "", "when": v["created_at"][:19].replace("T", " ")}
            for v in reversed(votes) if v["comment"] or v["flagged"]]
    return pd.DataFrame(rows, columns=NOTES)


def summary_markdown(s: dict, overlap: int = 1, overlap_fraction: float = 1.0) -> str:
    """Per task: votes, comparisons, overlap and alpha; then what alpha means and how this server assigns."""
    def pct(x):
        return "n/a" if x is None else f"{x:.0%}"

    lines = [f"**{s['n_votes']}** standing votes.", "",
             "| task | votes | comparisons judged | judged by ≥ 2 (overlap) | Krippendorff's alpha | left chosen |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for task, t in s["tasks"].items():
        alpha = "n/a" if t["alpha"] is None else f"{t['alpha']:.3f}"
        lines.append(f"| {task} | {t['votes']} | {t['judged']} of {t['comparisons']} | {t['overlap_units']} "
                     f"({pct(t['overlap_share'])}) | {alpha} | {pct(t['left_share'])} |")
    plan = (f"This server sends {overlap} annotators to {overlap_fraction:.0%} of the comparisons and one to the "
            "rest" if overlap > 1 and overlap_fraction > 0 else
            "This server sends each comparison to one annotator (start it with `--overlap 3 --overlap-fraction "
            "0.1` to measure agreement)")
    lines += ["", ALPHA_EXPLAINED, f"{plan}. *Left chosen*: the share of A/B decisions that went to the left "
              "candidate (50% = no position bias)."]
    return "\n".join(lines)
