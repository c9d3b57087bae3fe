"""`vrlhf sample`: draw k candidates per input from a policy, render them once and store them as comparisons.

Each run is a new round that records the policy it sampled, so a tuned policy can be labelled against an old one.
A round is marked complete only when all its comparisons are in. A run that stopped part-way (killed, crashed)
leaves its round incomplete, and the next run with the same recipe (task, policy, data, seed, k, n, temperature,
against) resumes it: it samples only the inputs still missing, so no input appears twice and none is lost.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from pathlib import Path

from labeler.store import MAX_K, LabelError, Store


def _where(path: str | None) -> str | None:
    """A local path made absolute (so a recipe matches from any working directory); hub ids stay as given."""
    return None if path is None else str(Path(path).resolve()) if Path(path).exists() else str(path)


def sample_round(store: Store, task_name: str, policy_dir: str, data: str, k: int = 2, n: int | None = None,
                 seed: int = 0, batch_size: int = 16, temperature: float = 1.0, name: str | None = None,
                 progress: bool = True, against: str | None = None, rows: list[dict] | None = None) -> int:
    """Sample `k` outputs for `n` rows of `data` (a random subset by `seed`) into a round; returns its id.

    A new round, or the incomplete one an interrupted run left with the same recipe, which is resumed.
    With `against`, each comparison pits one sample of `policy_dir` against one of the `against` policy (k = 2):
    how a tuned policy is labelled against the previous one. `rows` skips reloading `data` when already in memory.
    """
    import torch
    from tqdm import tqdm

    from vrlhf.data import load_rows
    from vrlhf.tasks import get_task

    if not 2 <= k <= MAX_K:
        raise LabelError(f"--k must be between 2 and {MAX_K}")
    if against and k != 2:
        raise LabelError("--against compares one sample of each policy: use --k 2")
    task = get_task(task_name)
    policies = [task.load_policy(policy_dir)] + ([task.load_policy(against)] if against else [])
    rows = rows if rows is not None else load_rows(data)
    if n is not None and n < len(rows):
        rows = random.Random(seed).sample(rows, n)
    ids = Counter(str(r["id"]) for r in rows)
    twice = next((i for i, c in ids.items() if c > 1), None)
    if twice is not None:  # a round is resumed by row id
        raise LabelError(f"{data}: row id {twice!r} appears {ids[twice]} times; each input needs its own id")
    recipe = {"task": task_name, "policy": _where(policy_dir), "data": _where(data), "seed": seed, "k": k, "n": n,
              "temperature": temperature, "against": _where(against)}
    open_round = store.open_round(recipe)
    common = dict(seed=seed, data_path=str(data), recipe=recipe, expected=len(rows), complete=False)
    if open_round is None:
        round_id = store.add_round(task_name, str(Path(policy_dir).resolve()), k, policy_name=name, **common)
        partner, done = None, set()
    else:
        round_id, partner, done = open_round["id"], open_round["partner"], open_round["rows"]
        if progress:
            print(f"resuming round {round_id}: {len(done)} of {len(rows)} comparisons already in", file=sys.stderr)
    if against and partner is None:  # the previous policy gets a round of its own, so every candidate names its policy
        partner = store.add_round(task_name, str(Path(against).resolve()), k, part_of=round_id,
                                  policy_name=f"{Path(against).name} (against round {round_id})",
                                  **common | {"recipe": None, "expected": None})
    origin = [round_id, partner] if against else None
    todo = [r for r in rows if str(r["id"]) not in done]
    torch.manual_seed(seed)
    per_policy = 1 if against else k
    render = getattr(task, "render", lambda output: output)
    grayscale = getattr(task, "grayscale", lambda im: im.convert("L").convert("RGB"))
    gray = task_name == "colorization"  # annotators see what the policy saw
    with torch.no_grad(), tqdm(total=len(rows), initial=len(rows) - len(todo), desc=f"round {round_id}", unit="img",
                               disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            pv = task.pixel_values(policies[0], [r["image"] for r in batch])
            outputs = [task.decode(p, batch, p.sample(pv, per_policy, temperature=temperature).tokens, per_policy)
                       for p in policies]  # one list per policy, image-major
            for i, row in enumerate(batch):
                shown = grayscale(row["image"]) if gray else None
                rendered = [render(o) for outs in outputs for o in outs[i * per_policy:(i + 1) * per_policy]]
                store.add_comparison(round_id, row["id"], row["image"], rendered, shown, output_rounds=origin)
            bar.update(len(batch))
    store.finish_round(round_id)  # all comparisons in: only now is the round complete
    return round_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vrlhf sample", description="Draw k candidates per input into the store.")
    parser.add_argument("--task", required=True, choices=["captioning", "colorization"], help="the vision task")
    parser.add_argument("--policy", required=True, help="policy directory (from pretrain or tune)")
    parser.add_argument("--data", required=True, help="data: image folder + metadata.jsonl, COCO JSON or HF dataset")
    parser.add_argument("--k", type=int, default=2, help="candidates per input: 2 = pairs, 3-4 = rankings")
    parser.add_argument("--n", type=int, default=None, help="number of inputs (default: all rows)")
    parser.add_argument("--db", required=True, help="database: a SQLite file path or a SQLAlchemy URL")
    parser.add_argument("--media", default=None, help="directory of rendered PNGs (default: beside the SQLite file)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the input subset and the sampling")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument("--batch-size", type=int, default=16, help="inputs per sampling batch")
    parser.add_argument("--name", default=None, help="policy name shown in exports (default: its directory name)")
    parser.add_argument("--against", default=None,
                        help="previous policy directory: each comparison is one sample of --policy vs one of this")
    args = parser.parse_args(argv)
    store = Store(args.db, media=args.media)
    round_id = sample_round(store, args.task, args.policy, args.data, args.k, args.n, args.seed,
                            args.batch_size, args.temperature, args.name, against=args.against)
    print(f"round {round_id} sampled; {args.db} now holds {store.counts()['comparisons']} comparisons")
    return 0


if __name__ == "__main__":
    sys.exit(main())
