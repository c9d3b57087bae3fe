"""The simulated reference writers (vrlhf/tasks/caption_writers.py) measured: per shape count the shapes a reference
mentions, its words, its oracle score and the ideal caption's; false attributes, mentions without a size or position;
CIDEr-D and oracle score of salient-first partial captions. Prints the table in docs/ORACLES.md.

    .venv/bin/python bench/bench_caption_writers.py
"""

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vrlhf.metrics import cider_d, tokenize  # noqa: E402
from vrlhf.shapes import caption, make_shapes, parse_caption  # noqa: E402
from vrlhf.tasks import caption_oracle  # noqa: E402


def main() -> None:
    """Print the writers' measured statistics (the table in docs/ORACLES.md)."""
    rows = make_shapes(2000, seed=1)
    rng = np.random.default_rng(0)
    by: dict = defaultdict(lambda: defaultdict(list))
    false = stated = no_size = no_position = mentions = 0
    for row in rows:
        shapes = row["attributes"]["shapes"]
        by[len(shapes)]["ideal"].append(caption_oracle.score(row, caption(shapes, rng)))
        for text in row["captions"]:
            counts = caption_oracle.components(row, text)
            by[len(shapes)]["mentions"].append(len(shapes) - counts["missing"])
            by[len(shapes)]["words"].append(len(text.split()))
            by[len(shapes)]["score"].append(caption_oracle.score(row, text))
            false, stated = false + counts["false"], stated + counts["true"] + counts["false"]
            for m in parse_caption(text):
                mentions, no_size, no_position = mentions + 1, no_size + (m["size"] is None), no_position + (
                    m["position"] is None)
    print("| shapes in the image | shapes a reference mentions | words | oracle score of a reference "
          "| of the ideal caption |")
    for n in sorted(by):
        d = by[n]
        print(f"| {n} | {np.mean(d['mentions']):.2f} | {np.mean(d['words']):.1f} | {np.mean(d['score']):.2f} | "
              f"{np.mean(d['ideal']):.2f} |")
    print(f"false attributes: {false / stated:.1%} of those stated; mentions without a size {no_size / mentions:.0%}, "
          f"without a position {no_position / mentions:.0%}")
    three = [r for r in rows if len(r["attributes"]["shapes"]) == 3][:600]
    refs = [[tokenize(c) for c in r["captions"]] for r in three]
    def by_salience(shapes: list[dict]) -> list[dict]:
        return sorted(shapes, key=lambda s: -(2 * (s["size"] == "large") + (s["position"] == "center")))

    for name, count in (("complete", 3), ("the most salient shape alone", 1), ("the two most salient", 2)):
        texts = [caption(by_salience(r["attributes"]["shapes"])[:count], np.random.default_rng(0)) for r in three]
        score = np.mean([caption_oracle.score(r, t) for r, t in zip(three, texts)])
        print(f"3-shape images, {name}: CIDEr-D {np.mean(cider_d([tokenize(t) for t in texts], refs)):.2f}, "
              f"oracle {score:.2f}")


if __name__ == "__main__":
    main()
