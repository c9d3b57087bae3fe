"""`vrlhf sample`: draw k candidates per input from a policy, render them once and store them as comparisons.

Each run is a new round that records the policy it sampled, so a tuned policy can be labelled against an old one.
A round is marked complete only when all its comparisons are in. A run that stopped part-way (killed, crashed)
leaves its round incomplete, and the next run with the same recipe (task, policy, data, seed, k, n, temperature,
against) resumes it: it samples only the inputs still missing, so no input appears twice and none is lost.

Identical candidates are never put to annotators (nobody can prefer one of two identical outputs): an input whose
k candidates are not all different is drawn again, keeping the different ones, up to `REDRAWS` times, then dropped
(a captioner that writes '' every time). `vrlhf sample` says how many inputs it dropped, and refuses when it dropped
them all. A run that fails before it stores a comparison leaves nothing new behind: no round, and no
database file or media folder that it created.
"""

from __future__ import annotations

import random
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
from sqlalchemy import update

from labeler.schema import Round
from labeler.store import MAX_K, LabelError, Store
from vrlhf.config import parse_config

REDRAWS = 4  # an input whose candidates are not all different is drawn again this many times before it is dropped


def _where(path: str | None) -> str | None:
    """A local path made absolute (so a recipe matches from any working directory); hub ids stay as given."""
    return None if path is None else str(Path(path).resolve()) if Path(path).exists() else str(path)


def sample_round(store: Store, task: ModuleType, policy_dir: str, data: str, k: int = 2, n: int | None = None,
                 seed: int = 0, batch_size: int = 16, temperature: float = 1.0, name: str | None = None,
                 progress: bool = True, against: str | None = None, rows: list[dict] | None = None,
                 image_column: str = "image", caption_column: str = "", edits: int = 0) -> int:
    """Sample `k` outputs of `task` (a task module) for `n` rows of `data` (a random subset by `seed`) into a round;
    returns its id.

    A new round (created with its first comparison), or the incomplete one an interrupted run left with the same
    recipe, which is resumed. Inputs whose k candidates are not all different are dropped (said on stderr); when
    every input is dropped nothing is written and LabelError says so.
    With `against`, each comparison pits one sample of `policy_dir` against one of the `against` policy (k = 2):
    how a tuned policy is labelled against the previous one. `rows` skips reloading `data` when already in memory.
    With `edits` (N), N of the k candidates are the task's edits of the policy's k - N samples (`edited_candidates`),
    stored in a round of their own that is part of this one (policy name "... (edits)"), so every export names them.
    """
    import torch
    from tqdm import tqdm

    from vrlhf.data import load_rows
    from vrlhf.device import on_default_device  # a GPU when there is one

    if not 2 <= k <= MAX_K:
        raise LabelError(f"--k must be between 2 and {MAX_K}")
    if against and k != 2:
        raise LabelError("--against compares one sample of each policy: use --k 2")
    if edits and against:
        raise LabelError("--edits and --against do not go together: an --against pair is one sample of each policy")
    if not 0 <= edits < k:
        raise LabelError(f"--edits must be between 0 and k - 1 = {k - 1}: at least one candidate is the policy's")
    task_name = task.NAME
    if edits and not hasattr(task, "edits"):
        raise LabelError(f"--edits: task {task_name} has no candidate edits (an `edits` member, docs/ARCHITECTURE.md)")
    policies = [on_default_device(task.load_policy(path)) for path in [policy_dir] + ([against] if against else [])]
    rows = rows if rows is not None else load_rows(data, image_column=image_column, caption_column=caption_column)
    if n is not None and n < len(rows):
        rows = random.Random(seed).sample(rows, n)
    ids = Counter(str(r["id"]) for r in rows)
    twice = next((i for i, c in ids.items() if c > 1), None)
    if twice is not None:  # a round is resumed by row id
        raise LabelError(f"{data}: row id {twice!r} appears {ids[twice]} times; each input needs its own id")
    recipe = {"task": task_name, "policy": _where(policy_dir), "data": _where(data), "seed": seed, "k": k, "n": n,
              "temperature": temperature, "against": _where(against)} | ({"edits": edits} if edits else {})
    open_round = store.open_round(recipe)
    common = dict(seed=seed, data_path=str(data), recipe=recipe, expected=len(rows), complete=False)
    round_id, partner, done = None, None, set()
    if open_round is not None:
        round_id, partner, done = open_round["id"], open_round["partner"], open_round["rows"]
        if progress:
            print(f"resuming round {round_id}: {len(done)} of {len(rows)} comparisons already in", file=sys.stderr)

    def rounds() -> tuple[int, list[int] | None]:
        """The round the comparisons go into and the round of each candidate (--against's partner round, or the
        round of the edits), made when the first comparison is stored."""
        nonlocal round_id, partner
        if round_id is None:
            round_id = store.add_round(task_name, str(Path(policy_dir).resolve()), k, policy_name=name, **common)
        if against and partner is None:  # the previous policy gets a round of its own: every candidate names its policy
            partner = store.add_round(task_name, str(Path(against).resolve()), k, part_of=round_id,
                                      policy_name=f"{Path(against).name} (against round {round_id})",
                                      **common | {"recipe": None, "expected": None})
        if edits and partner is None:  # the edits get a round of their own: exports name them as their "policy"
            partner = store.add_round(task_name, str(Path(policy_dir).resolve()), k, part_of=round_id,
                                      policy_name=f"{name or Path(policy_dir).name} (edits)",
                                      **common | {"recipe": None, "expected": None})
        if against:
            return round_id, [round_id, partner]
        return round_id, [round_id] * (k - edits) + [partner] * edits if edits else None

    todo = [r for r in rows if str(r["id"]) not in done]
    torch.manual_seed(seed)
    per_policy, dropped = 1 if against else k - edits, 0
    edit_rng = np.random.default_rng(seed)

    def draw(batch: list[dict]) -> list[list]:
        """The k rendered candidates of each row of `batch` (with --against: one of each policy; with --edits: the
        policy's k - N samples, then N edits of them)."""
        pv = task.pixel_values(policies[0], [r["image"] for r in batch])
        outputs = [task.decode(p, batch, p.sample(pv, per_policy, temperature=temperature).tokens, per_policy)
                   for p in policies]  # one list per policy, image-major
        candidates = [[o for outs in outputs for o in outs[i * per_policy:(i + 1) * per_policy]]
                      for i in range(len(batch))]
        if edits:  # the edits never see the row's hidden ground truth
            candidates = [c + edited_candidates(task, row | {"attributes": None}, c, edits, edit_rng)
                          for row, c in zip(batch, candidates, strict=True)]
        return [[stored_view(task, row, o) for o in c] for row, c in zip(batch, candidates, strict=True)]

    with torch.no_grad(), tqdm(total=len(rows), initial=len(rows) - len(todo), desc=f"{task_name} {name or ''}",
                               unit="img", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            candidates = draw(batch)
            for _ in range(REDRAWS):  # identical candidates: draw those rows again, keeping the different ones found
                short = [i for i, c in enumerate(candidates) if not (len(c) == k and all_different(c))]
                if not short:
                    break
                for i, more in zip(short, draw([batch[i] for i in short]), strict=True):
                    candidates[i] = more if against or edits else different(candidates[i] + more)[:k]
            for row, rendered in zip(batch, candidates, strict=True):
                shown = task.show_input(row["image"])  # what the policy saw (colorization: gray)
                if not (len(rendered) == k and all_different(rendered)):
                    dropped += 1
                    continue
                into, origin = rounds()
                store.add_comparison(into, row["id"], row["image"], rendered,
                                     None if shown is row["image"] else shown, output_rounds=origin)
            bar.update(len(batch))
    if dropped:
        print(f"dropped {dropped} of {len(todo)} inputs: {1 + REDRAWS} draws gave fewer than {k} different "
              "candidates (nobody can prefer one of two identical outputs)", file=sys.stderr)
    if round_id is None:
        raise LabelError(f"nothing to label: the candidates of all {len(todo)} inputs of {data} were identical (a "
                         "policy that writes the same output every time? try a higher --temperature); nothing "
                         "was stored")
    if dropped:  # the round holds the comparisons it kept: it is complete without the dropped inputs
        store.retry(lambda s: s.execute(update(Round).where(Round.id == round_id)
                                        .values(expected=Round.expected - dropped)))
    store.finish_round(round_id)  # all comparisons in: only now is the round complete
    return round_id


def edited_candidates(task, row: dict, samples: list, n: int, rng) -> list:
    """`n` candidate edits (the task's `edits`) of the policy's `samples` of `row`: each of another sample where there
    are enough, each a random one of that sample's edits that looks like no sample and no earlier edit; fewer when
    no new-looking edit is left. The row's hidden ground truth is never read (the edits do not take it)."""
    seen = {look(o) for o in samples}  # outputs are what is rendered (text, an RGB image)
    made = []
    for j in rng.permutation(len(samples)).tolist() * n:  # cycle through the samples in a random order
        if len(made) == n:
            break
        others = samples[:j] + samples[j + 1:]
        options = list(task.edits(row, samples[j], rng, others).values())
        for i in rng.permutation(len(options)).tolist():
            key = look(options[i])
            if key not in seen:
                seen.add(key)
                made.append(options[i])
                break
    return made


def stored_view(task: ModuleType, row: dict, output) -> tuple[str | None, object]:
    """A candidate as the labeling store keeps it, (text, image): the stored output (`to_stored`: text, or an image
    when STORED is image) and, for a text-stored output that people see as an image (SHOWN image: e.g. boxes drawn
    over the input), that image too (`render`), which the page shows."""
    stored = task.to_stored(output)
    if task.STORED == "image":
        return None, stored
    return stored, task.render(row, output) if task.SHOWN == "image" else None


def look(output) -> str | tuple:
    """What an annotator sees of an output, as a key: text up to spacing, an image pixel for pixel (of a stored
    (text, image) view: its text, which decides what its image shows)."""
    if isinstance(output, tuple):
        output = output[0] if output[0] is not None else output[1]
    return " ".join(output.split()) if isinstance(output, str) else (output.size, output.convert("RGB").tobytes())


def all_different(outputs: list) -> bool:
    """Whether no two rendered outputs look the same to an annotator."""
    return len({look(o) for o in outputs}) == len(outputs)


def different(outputs: list) -> list:
    """`outputs` without the ones that look like an earlier one, in order."""
    seen: set = set()
    return [o for o in outputs if not (look(o) in seen or seen.add(look(o)))]


@dataclass
class SampleConfig:
    task: str = field(metadata={"help": "the vision task: a module of vrlhf/tasks (e.g. captioning) or the dotted "
                                        "import path of a task module of your own"})
    policy: str = field(metadata={"help": "policy directory (from pretrain or tune)"})
    data: str = field(metadata={"help": "data: image folder + metadata.jsonl, COCO JSON or HF dataset"})
    db: str = field(metadata={"help": "database: a SQLite file path or a SQLAlchemy URL"})
    k: int = field(default=2, metadata={"help": "candidates per input: 2 = pairs, 3-4 = rankings"})
    n: int | None = field(default=None, metadata={"help": "number of inputs (default: all rows)"})
    media: str | None = field(default=None, metadata={"help": "directory of rendered PNGs (default: beside the "
                                                              "SQLite file; needed with PostgreSQL)"})
    seed: int = field(default=0, metadata={"help": "seed for the input subset and the sampling"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    batch_size: int = field(default=16, metadata={"help": "inputs per sampling batch"})
    name: str | None = field(default=None, metadata={"help": "policy name shown in exports (default: its directory "
                                                             "name)"})
    against: str | None = field(default=None, metadata={"help": "previous policy directory: each comparison is one "
                                                                "sample of --policy vs one of this"})
    edits: int = field(default=0, metadata={"help": "candidates per comparison that are edits of the policy's other "
                                                   "samples (the task's directions people reward, docs/DEMO.md); "
                                                   "k stays the comparison size"})
    image_column: str = field(default="image", metadata={"help": "a Hugging Face dataset's image column"})
    caption_column: str = field(default="", metadata={"help": "a Hugging Face dataset's caption column (empty: "
                                                              "captions, caption or text; sampling needs none)"})


def main(argv: list[str] | None = None) -> int:
    from vrlhf.tasks import get_task

    cfg = parse_config(SampleConfig, argv, prog="vrlhf sample")
    task = get_task(cfg.task)  # resolved once, here; an unknown task is refused before the database is touched
    created = new_paths(cfg.db, cfg.media)
    store = None
    try:
        store = Store(cfg.db, media=cfg.media)
        round_id = sample_round(store, task, cfg.policy, cfg.data, cfg.k, cfg.n, cfg.seed, cfg.batch_size,
                                cfg.temperature, cfg.name, against=cfg.against, image_column=cfg.image_column,
                                edits=cfg.edits,
                                caption_column=cfg.caption_column)
    except BaseException:
        # a database this run created and stored nothing in goes again, with its media folder: a failed command
        # leaves nothing new behind (one that stored comparisons stays: the next run resumes it)
        empty = store is None or store.counts()["comparisons"] == 0
        if store is not None:
            store.close()
        if empty:
            remove(created)
        raise
    print(f"round {round_id} sampled; {cfg.db} now holds {store.counts()['comparisons']} comparisons")
    return 0


def new_paths(db: str, media: str | None) -> list[Path]:
    """The SQLite file (with its -wal/-shm), the folders and the media folder that opening `db` would create."""
    if "://" in db and not db.startswith("sqlite:///"):
        return [topmost_missing(Path(media))] if media else []
    path = Path(db.removeprefix("sqlite:///")).resolve()
    media_dir = Path(media).resolve() if media else path.with_name(path.stem + "_media")
    files = [path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    return [p for p in (topmost_missing(path.parent), topmost_missing(media_dir), *files) if not p.exists()]


def topmost_missing(path: Path) -> Path:
    """The highest folder of `path` that does not exist yet (`path` itself when its parent exists)."""
    while not path.parent.exists():
        path = path.parent
    return path


def remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


if __name__ == "__main__":
    from vrlhf.errors import run_command

    sys.exit(run_command("vrlhf sample", main))
