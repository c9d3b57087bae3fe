"""The demo's report: result tables for the terminal, and report.html with sample grids and reward curves (PNG)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

COLUMNS = {
    "captioning": ["cider_d", "bleu4", "oracle_score", "oracle_score_sampled", "win_rate_vs_mle_greedy",
                   "win_rate_vs_mle_sampled", "ties_vs_mle_sampled", "eos_rate", "words"],
    "colorization": ["colorfulness", "saturation", "ab_error", "oracle_score", "oracle_score_sampled",
                     "win_rate_vs_mle_greedy", "win_rate_vs_mle_sampled", "ties_vs_mle_sampled"],
}
ROW_NAMES = {"mle": "MLE (start)", "metric": "tuned: metric reward", "learned": "tuned: learned reward",
             "both": "tuned: metric + learned", "references": "references (for scale)"}


def table(task: str, evaluation: dict) -> list[list[str]]:
    cols = COLUMNS[task]
    rows = [["policy", *cols]]
    for name, metrics in evaluation.items():
        rows.append([ROW_NAMES.get(name, name), *(f"{metrics[c]:.3f}" if c in metrics else "–" for c in cols)])
    return rows


def stage_times(result: dict) -> str:
    """"sampling 5, labeling 21, ...": the seconds of each stage of one task."""
    return ", ".join(f"{stage} {seconds:.0f}" for stage, seconds in result.get("seconds", {}).items())


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def rm_accuracy(rm_summary: dict) -> float:
    """Held-out pairwise accuracy of the best reward-model checkpoint."""
    return float(rm_summary.get("best", {}).get("accuracy", float("nan")))


def print_tables(summary: dict) -> None:
    for task, result in summary["tasks"].items():
        print(f"\n## {task}  (reward model held-out accuracy {rm_accuracy(result['reward_model']):.3f}, "
              f"{result['labeling']['votes']} votes through the app)\n")
        print(markdown(table(task, result["evaluation"])))
        print(f"\nseconds per stage: {stage_times(result)}")


def png_data_uri(figure_or_image) -> str:
    buf = io.BytesIO()
    if hasattr(figure_or_image, "savefig"):
        figure_or_image.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    else:
        figure_or_image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def reward_curves(task: str, tuning: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for run, info in tuning.items():
        records = [json.loads(line) for line in Path(info["dir"], "metrics.jsonl").read_text().splitlines()]
        train = [r for r in records if "reward" in r and "step" in r]
        axes[0].plot([r["step"] for r in train], [r["reward"] for r in train], label=ROW_NAMES[run])
        for key in [k for k in (train[0] if train else {}) if k.startswith("reward/")]:
            axes[1].plot([r["step"] for r in train], [r[key] for r in train], label=f"{run}: {key[7:]}")
    axes[0].set(title=f"{task}: training reward (total)", xlabel="step")
    axes[1].set(title="reward components", xlabel="step")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return fig


def sample_grid_html(task: str, rows: list[dict], outputs: dict, n: int = 8) -> str:
    """Input, MLE sample and each tuned policy's sample, one row per held-out image."""
    from vrlhf.tasks.colorization import grayscale

    names = list(outputs)
    head = "<tr><th>input</th>" + "".join(f"<th>{ROW_NAMES.get(m, m)}</th>" for m in names) + "</tr>"
    body = []
    for i, row in enumerate(rows[:n]):
        shown = grayscale(row["image"]) if task == "colorization" else row["image"]
        cells = [f"<td><img class='px' src='{png_data_uri(shown.resize((144, 144), 0))}'></td>"]
        for m in names:
            out = outputs[m]["sample"][i]
            if isinstance(out, str):
                cells.append(f"<td class='cap'>{html.escape(out)}</td>")
            else:
                cells.append(f"<td><img class='px' src='{png_data_uri(out.resize((144, 144), 0))}'></td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class='grid'>{head}{''.join(body)}</table>"


def write_report(workdir: Path, summary: dict, outputs_by_task: dict) -> Path:
    import matplotlib.pyplot as plt

    parts = [f"<h1>visual-rlhf demo report</h1><p>{html.escape(summary['machine'])} · "
             f"{summary['seconds'] / 60:.1f} minutes end to end · config: <code>{html.escape(json.dumps(summary['config']))}</code></p>"]
    for task, result in summary["tasks"].items():
        rows, outputs = outputs_by_task[task]
        parts.append(f"<h2>{task}</h2><p>{result['labeling']['votes']} simulated votes through the app's HTTP API "
                     f"({', '.join(result['labeling']['annotators'])}); reward model held-out accuracy "
                     f"{rm_accuracy(result['reward_model']):.3f}. Seconds per stage: "
                     f"{html.escape(stage_times(result))}.</p>")
        rows_html = table(task, result["evaluation"])
        parts.append("<table class='res'>" + "".join(
            "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c)}</{'th' if i == 0 else 'td'}>" for c in r) + "</tr>"
            for i, r in enumerate(rows_html)) + "</table>")
        fig = reward_curves(task, result["tuning"])
        parts.append(f"<h3>Reward curves</h3><img src='{png_data_uri(fig)}'>")
        plt.close(fig)
        parts.append("<h3>Held-out samples: MLE vs tuned (temperature-1 samples)</h3>" + sample_grid_html(task, rows, outputs))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto} table{border-collapse:collapse;margin:8px 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px} img.px{image-rendering:pixelated}"
             "td.cap{max-width:220px}")
    path = workdir / "report.html"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>visual-rlhf demo</title>"
                    f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    return path
