"""Writing what people will compare: sampling rounds and their comparisons (what `vrlhf sample` stores).

A round is one policy's samples; `vrlhf sample` opens it incomplete with its recipe and expected size, adds one
comparison per input (written whole: the input and all k candidates in one transaction) and closes it with
`finish_round`. An incomplete round with the same recipe is resumed by the next run (`open_round`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from labeler.media import save_png
from labeler.schema import Candidate, Comparison, Item, Round
from vrlhf.errors import LabelError

MAX_K = 4


def canonical(recipe: dict) -> str:
    """A recipe as the text stored and compared: sorted keys, no spaces."""
    return json.dumps(recipe, sort_keys=True, separators=(",", ":"))


def add_round(store, task: str, policy_path: str, k: int, policy_name: str | None = None, seed: int | None = None,
              data_path: str | None = None, recipe: dict | None = None, expected: int | None = None,
              complete: bool = True, part_of: int | None = None) -> int:
    """A new round; `vrlhf sample` opens it incomplete (`complete=False`, its `recipe` and `expected` size) and
    closes it with `finish_round`. `part_of`: the round whose comparisons hold this one's candidates."""
    if not 2 <= k <= MAX_K:
        raise LabelError(f"k must be between 2 and {MAX_K}, got {k}")
    with store.transaction() as s:
        r = Round(task=task, policy_path=str(policy_path), policy_name=policy_name or Path(policy_path).name,
                  k=k, seed=seed, data_path=None if data_path is None else str(data_path),
                  recipe=None if recipe is None else canonical(recipe), expected=expected, complete=complete,
                  part_of=part_of)
        s.add(r)
        s.flush()
        return r.id


def open_round(store, recipe: dict) -> dict | None:
    """The incomplete round sampled from `recipe`, if any: {"id", "partner" (its --against round or None),
    "rows" (row ids that already have their comparison)}."""
    with store.ReadSession() as s:
        r = s.scalar(select(Round).where(Round.recipe == canonical(recipe), Round.complete.is_(False),
                                         Round.part_of.is_(None)).order_by(Round.id).limit(1))
        if r is None:
            return None
        partner = s.scalar(select(Round.id).where(Round.part_of == r.id).order_by(Round.id).limit(1))
        rows = s.scalars(select(Item.row_id).join(Comparison, Comparison.item_id == Item.id)
                         .where(Comparison.round_id == r.id)).all()
    return {"id": r.id, "partner": partner, "rows": set(rows)}


def finish_round(store, round_id: int) -> None:
    """Mark a round (and the rounds that are part of it) complete; refused unless all its comparisons are in."""
    def write(s: Session) -> None:
        r = s.get(Round, round_id)
        if r is None:
            raise LabelError(f"unknown round {round_id}")
        have = s.scalar(select(func.count(Comparison.id)).where(Comparison.round_id == round_id))
        if r.expected is not None and have != r.expected:
            raise LabelError(f"round {round_id} holds {have} of its {r.expected} comparisons: not complete")
        s.execute(update(Round).where(or_(Round.id == round_id, Round.part_of == round_id))
                  .values(complete=True).execution_options(synchronize_session=False))

    store.retry(write)


def add_comparison(store, round_id: int, row_id: str, image: Image.Image, outputs: Sequence,
                   input_image: Image.Image | None = None, output_rounds: Sequence[int] | None = None) -> int:
    """Store one input and its k outputs as a comparison; returns its id. Each output is text, an image, or a
    (text, image) pair (`labeler.sampling.stored_view`: a text-stored output and the image people see of it).

    `input_image` is what annotators see of the input (the task's `show_input`; default: `image` itself).
    `output_rounds` names the round (policy) that produced each output when they differ, e.g. a tuned policy
    against the previous one; by default every output belongs to `round_id`.
    """
    image = image.convert("RGB")
    image_rel, sha = save_png(store, image, "inputs")
    input_rel = image_rel if input_image is None else save_png(store, input_image, "inputs")[0]
    views = [o if isinstance(o, tuple) else (o, None) if isinstance(o, str) else (None, o) for o in outputs]
    rendered = [(t, None if im is None else save_png(store, im.convert("RGB"), "candidates")[0]) for t, im in views]

    def write(s: Session) -> int:
        q = select(Round).where(Round.id == round_id)
        rnd = s.scalar(q.with_for_update() if store.dialect == "postgresql" else q)  # one writer per round
        if rnd is None:
            raise LabelError(f"unknown round {round_id}")
        if len(outputs) != rnd.k:
            raise LabelError(f"round {round_id} has k={rnd.k} but got {len(outputs)} outputs")
        item = s.scalar(select(Item).where(Item.task == rnd.task, Item.row_id == str(row_id), Item.image_sha == sha))
        if item is None:
            item = Item(task=rnd.task, row_id=str(row_id), image_sha=sha, image_path=image_rel, input_path=input_rel)
            s.add(item)
            s.flush()
        else:  # an item appears once per round: a second sampler of the same round finds it already in
            have = s.scalar(select(Comparison.id).where(Comparison.round_id == round_id,
                                                        Comparison.item_id == item.id).limit(1))
            if have is not None:
                return have
        origin = list(output_rounds) if output_rounds is not None else [round_id] * len(rendered)
        cands = [Candidate(round_id=origin[j], item_id=item.id, index=j, text=t, image_path=p)
                 for j, (t, p) in enumerate(rendered)]
        s.add_all(cands)
        s.flush()
        c = Comparison(round_id=round_id, item_id=item.id, candidate_ids=[c.id for c in cands], k=rnd.k, filled=0)
        s.add(c)
        s.flush()
        return c.id

    return store.retry(write)
