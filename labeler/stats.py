"""Labeling statistics: per-annotator counts and speed, left/right bias, label mix, inter-annotator agreement."""

from __future__ import annotations

import math

import krippendorff
import numpy as np
import pandas as pd

from labeler.store import Store


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


def agreement(votes: list[dict]) -> tuple[float | None, int]:
    """Krippendorff's alpha (nominal) over comparisons judged by two or more annotators; (alpha, n units)."""
    judged = [v for v in votes if canonical(v) is not None]
    by_cmp: dict[int, dict[str, str]] = {}
    for v in judged:
        by_cmp.setdefault(v["comparison_id"], {})[v["annotator"]] = canonical(v)
    units = {c: js for c, js in by_cmp.items() if len(js) >= 2}
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


def compute(store: Store) -> dict:
    """Standing (not retracted) votes summarised; DataFrames ready for display."""
    votes = [v for v in store.votes() if v["retracted_at"] is None]
    df = pd.DataFrame(votes, columns=["annotator", "choice", "elapsed_ms", "comparison_id"])
    if df.empty:
        per = pd.DataFrame(columns=["annotator", "labels", "median_s", "left_share"])
        labels = pd.DataFrame(columns=["choice", "count", "share"])
    else:
        decisive = df[df.choice.isin(["a", "b"])]
        left = decisive.groupby("annotator").choice.apply(lambda s: float((s == "a").mean()))
        per = df.groupby("annotator").agg(labels=("choice", "size"), median_s=("elapsed_ms", "median"))
        per["median_s"] = (per["median_s"] / 1000).round(2)
        per["left_share"] = left.reindex(per.index).round(3)
        per = per.reset_index()
        labels = df.choice.value_counts().rename_axis("choice").reset_index(name="count")
        labels["share"] = (labels["count"] / labels["count"].sum()).round(3)
    alpha, units = agreement(votes)
    decisive_all = [v for v in votes if v["choice"] in ("a", "b")]
    left_share = (sum(v["choice"] == "a" for v in decisive_all) / len(decisive_all)) if decisive_all else None
    return {"n_votes": len(votes), "per_annotator": per, "labels": labels, "alpha": alpha,
            "overlap_units": units, "left_share": left_share}


def summary_markdown(s: dict) -> str:
    alpha = "n/a" if s["alpha"] is None else f"{s['alpha']:.3f}"
    left = "n/a" if s["left_share"] is None else f"{s['left_share']:.1%}"
    return (f"**{s['n_votes']}** standing votes · left chosen in **{left}** of A/B decisions (50% = no bias) · "
            f"Krippendorff's alpha **{alpha}** on {s['overlap_units']} overlapped comparisons")
