"""The simulated box annotators (vrlhf/tasks/box_annotators.py) measured on a shapes split: how far each drawn edge
lies from the exact one, the IoU of drawn boxes, the shapes left out (small / large), hue confusions, duplicates,
and the annotations judged as a detector's output would be (COCO mAP against the exact boxes, the oracle's score).
Prints the table in docs/ORACLES.md and writes bench/results/box_annotators.json.

    .venv/bin/python bench/bench_box_annotators.py [--data work/demo/shapes/train]
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vrlhf.tasks import detection_oracle  # noqa: E402
from vrlhf.tasks.box_annotators import annotated_boxes  # noqa: E402
from vrlhf.tasks.detection_boxes import true_boxes  # noqa: E402
from vrlhf.tasks.detection_metrics import box_iou, coco_metrics  # noqa: E402


def measure(rows: list[dict]) -> dict:
    """The annotators' statistics over `rows` (each exact box matched to the drawn box of highest IoU > 0.3)."""
    moves, ious, small, missed, hue, dups, drawn_all = [], [], [], [], 0, 0, []
    for row in rows:
        drawn = annotated_boxes(row)
        drawn_all.append(drawn)
        for shape, exact in zip(row["attributes"]["shapes"], true_boxes(row), strict=True):
            overlap = box_iou([b["box"] for b in drawn], [exact["box"]])[:, 0] if drawn else np.zeros(0)
            small.append(shape["size"] == "small")
            missed.append(not (overlap > 0.3).any())
            if missed[-1]:
                continue
            dups += int((overlap > 0.3).sum()) - 1
            b = drawn[int(overlap.argmax())]
            ious.append((overlap.max(), small[-1]))
            moves += [exact["box"][0] - b["box"][0], exact["box"][1] - b["box"][1], b["box"][2] - exact["box"][2],
                      b["box"][3] - exact["box"][3]]
            hue += b["label"] != exact["label"]
    moves, small, missed = np.array(moves), np.array(small), np.array(missed)
    iou, iou_small = np.array([i for i, _ in ious]), np.array([s for _, s in ious])
    coco = coco_metrics([true_boxes(r) for r in rows], drawn_all)
    return {
        "rows": len(rows), "shapes": int(len(small)),
        "edge_moves": {str(m): round(float((moves == m).mean()), 3) for m in (-1, 0, 1, 2)},
        "iou_mean": round(float(iou.mean()), 3), "iou_small": round(float(iou[iou_small].mean()), 3),
        "iou_large": round(float(iou[~iou_small].mean()), 3),
        "missed_small": round(float(missed[small].mean()), 3), "missed_large": round(float(missed[~small].mean()), 3),
        "hue_confused": round(hue / len(small), 3), "duplicates": round(dups / len(small), 3),
        "boxes_per_image": round(float(np.mean([len(d) for d in drawn_all])), 3),
        "exact_boxes_per_image": round(float(np.mean([len(r["attributes"]["shapes"]) for r in rows])), 3),
        "annotation_map": round(coco["map"], 3), "annotation_ap50": round(coco["ap50"], 3),
        "annotation_ar": round(coco["ar"], 3),
        "annotation_oracle_score": round(float(np.mean([detection_oracle.score(r, d)
                                                        for r, d in zip(rows, drawn_all)])), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT / "work/demo/shapes/train"), help="a shapes split (imagefolder)")
    parser.add_argument("--out", default=str(ROOT / "bench/results/box_annotators.json"))
    args = parser.parse_args(argv)
    # the annotators read only a row's id and attributes: the metadata, without decoding 9000 images
    lines = (Path(args.data) / "metadata.jsonl").read_text().splitlines()
    rows = [{"id": r["id"], "attributes": r["attributes"]} for r in map(json.loads, lines)]
    result = measure(rows) | {"data": str(Path(args.data).relative_to(ROOT)) if ROOT in Path(args.data).parents
                                       else args.data}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
