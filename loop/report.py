"""The loop's report: result tables per round for the terminal, and report.html with the win rate per round as a
plot, sample grids and reward curves. Each task's columns are its `REPORT_METRICS`; `tasks` maps each task name of
a summary to its module (resolved once, by the demo)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from vrlhf.rundir import read_metrics

ROW_NAMES = {"mle": "MLE (start)", "metric": "tuned: metric reward only", "learned": "tuned: learned reward",
             "both": "tuned: metric + learned", "best_of_n": "best-of-n, learned reward (no tuning)",
             "oracle": "tuned on the oracle itself (bound)", "ideal": "ideal output (not a policy)"}


def table_rows(task, result: dict) -> list[list[str]]:
    """Header + one line per row: MLE, the fixed rows, then every round's learned rows; a column per metric of the
    task module's `REPORT_METRICS`."""
    cols = list(task.REPORT_METRICS)
    lines = [["round", "policy", *cols]]

    def line(round_: str, name: str, metrics: dict):
        lines.append([round_, ROW_NAMES.get(name, name),
                      *(f"{metrics[c]:.3f}" if c in metrics else "–" for c in cols)])

    fixed = result.get("fixed", {})
    for name in ("mle", "metric"):
        if name in fixed:
            line("–", name, fixed[name])
    for record in result["rounds"]:
        for name, metrics in record["evaluation"].items():
            line(str(record["round"]), name, metrics)
    for name in ("oracle", "ideal"):
        if name in fixed:
            line("–", name, fixed[name])
    return lines


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def stage_times(result: dict) -> str:
    """"sampling 5, labeling 21, ...": the seconds of each stage of one task, summed over rounds."""
    return ", ".join(f"{stage} {seconds:.0f}" for stage, seconds in result.get("seconds", {}).items())


def headline(task: str, result: dict) -> str:
    rounds = result["rounds"]
    accuracy = [r["reward_model"].get("best", {}).get("accuracy", float("nan")) for r in rounds]
    labels = [r["export"]["pairs"] for r in rounds]
    return (f"{task}: {len(rounds)} rounds; pairs for the reward model per round {labels}; held-out reward-model "
            f"accuracy per round {', '.join(f'{a:.3f}' for a in accuracy)}")


def print_tables(summary: dict, tasks: dict) -> None:
    for task, result in summary["tasks"].items():
        print(f"\n## {headline(task, result)}\n")
        print(markdown(table_rows(tasks[task], result)))
        print(f"\nseconds per stage: {stage_times(result)}")


def png_data_uri(figure_or_image) -> str:
    buf = io.BytesIO()
    if hasattr(figure_or_image, "savefig"):
        figure_or_image.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    else:
        figure_or_image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def win_rate_plot(task: str, result: dict):
    """Win rate vs MLE (greedy) per round for each learned row, with the fixed rows as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    rounds = [r["round"] for r in result["rounds"]]
    for name in ("learned", "both", "best_of_n"):
        values = [r["evaluation"][name]["win_rate_vs_mle_greedy"] for r in result["rounds"] if name in r["evaluation"]]
        if values:
            ax.plot(rounds[: len(values)], values, marker="o", label=ROW_NAMES[name])
    for name, style in (("metric", ":"), ("oracle", "--"), ("ideal", "-.")):
        if name in result.get("fixed", {}):
            ax.axhline(result["fixed"][name]["win_rate_vs_mle_greedy"], linestyle=style, color="gray", linewidth=1)
            ax.annotate(ROW_NAMES[name], (rounds[0], result["fixed"][name]["win_rate_vs_mle_greedy"]), fontsize=7,
                        xytext=(2, 2), textcoords="offset points", color="dimgray")
    ax.axhline(0.5, color="black", linewidth=0.6)
    ax.set(title=f"{task}: win rate against the MLE policy (greedy, oracle judges)", xlabel="round",
           ylabel="win rate", xticks=rounds, ylim=(0, 1))
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def label_efficiency_plot(curves_by_task: dict):
    """Final win rate against MLE (greedy) per number of comparisons, marks on and off: one panel per task.
    `curves_by_task`: {task: {"on"|"off": {budget: win rates}}} (a summary's `label_efficiency`; JSON keys are
    strings)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves_by_task), figsize=(4.8 * len(curves_by_task), 3.4), squeeze=False)
    for ax, (task, curves) in zip(axes[0], curves_by_task.items()):
        for marks, style in (("on", "o-"), ("off", "s--")):
            points = sorted((int(n), v["win_rate_vs_mle_greedy"]) for n, v in curves.get(marks, {}).items())
            if points:
                ax.plot(*zip(*points), style, label=f"marks {marks}")
        ax.axhline(0.5, color="black", linewidth=0.6)
        budgets = sorted({int(n) for c in curves.values() for n in c})
        ax.set(title=f"{task}: one round", xlabel="comparisons labelled", ylabel="win rate vs MLE (greedy)",
               xscale="log", xticks=budgets, xticklabels=[str(b) for b in budgets], ylim=(0.3, 0.9))
        ax.minorticks_off()
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    return fig


def reward_curves(task: str, result: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for record in result["rounds"]:
        for track in ("learned", "both"):
            path = Path(result["dirs"].get(f"round-{record['round']}/{track}", "/nonexistent")) / "metrics.jsonl"
            if path.is_file():
                records = [record for _, record in read_metrics(path)]
                train = [r for r in records if "reward" in r]
                ax.plot([r["step"] for r in train], [r["reward"] for r in train],
                        label=f"round {record['round']}: {track}")
    ax.set(title=f"{task}: training reward (total)", xlabel="step")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def sample_grid_html(task, rows: list[dict], outputs: dict) -> str:
    """Input and each policy's temperature-1 sample, one line per held-out image, as people see them (the task
    module's `show_input` and `render`)."""
    names = list(outputs)
    head = "<tr><th>input</th>" + "".join(f"<th>{html.escape(ROW_NAMES.get(m, m))}</th>" for m in names) + "</tr>"
    body = []
    for i, row in enumerate(rows):
        cells = [f"<td><img class='px' src='{png_data_uri(task.show_input(row['image']).resize((144, 144), 0))}'>"
                 "</td>"]
        for m in names:
            out = task.render(row, outputs[m][i])
            if isinstance(out, str):
                cells.append(f"<td class='cap'>{html.escape(out)}</td>")
            else:
                cells.append(f"<td><img class='px' src='{png_data_uri(out.resize((144, 144), 0))}'></td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class='grid'>{head}{''.join(body)}</table>"


def write_report(workdir: Path, summary: dict, samples: dict, tasks: dict) -> Path:
    import matplotlib.pyplot as plt

    parts = [f"<h1>visual-rlhf: feedback rounds</h1><p>{html.escape(summary['machine'])} · "
             f"{summary['seconds'] / 60:.1f} minutes end to end · config: "
             f"<code>{html.escape(json.dumps(summary['config']))}</code></p>"]
    for task, result in summary["tasks"].items():
        parts.append(f"<h2>{task}</h2><p>{html.escape(headline(task, result))}. Seconds per stage: "
                     f"{html.escape(stage_times(result))}.</p>")
        parts.append("<table class='res'>" + "".join(
            "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c)}</{'th' if i == 0 else 'td'}>" for c in r)
            + "</tr>" for i, r in enumerate(table_rows(tasks[task], result))) + "</table>")
        for title, make in (("Win rate against MLE per round", win_rate_plot), ("Reward curves", reward_curves)):
            fig = make(task, result)
            parts.append(f"<h3>{title}</h3><img src='{png_data_uri(fig)}'>")
            plt.close(fig)
        if result.get("label_efficiency"):
            fig = label_efficiency_plot({task: result["label_efficiency"]})
            parts.append("<h3>Label efficiency: the final win rate against MLE per number of comparisons, marks on "
                         f"and off</h3><img src='{png_data_uri(fig)}'>")
            plt.close(fig)
        if task in samples:
            rows, outputs = samples[task]
            parts.append("<h3>Held-out samples (temperature 1): MLE and the last round's policies</h3>"
                         + sample_grid_html(tasks[task], rows, outputs))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto} table{border-collapse:collapse;margin:8px 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px} img.px{image-rendering:pixelated}"
             "td.cap{max-width:220px}")
    path = workdir / "report.html"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>visual-rlhf loop</title>"
                    f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    return path
