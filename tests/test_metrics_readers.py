"""Every reader of a run's metrics.jsonl goes through `vrlhf.rundir.read_metrics`: the demo report's reward curves
of a run cut off mid-line (a torn last line) show the steps written whole instead of failing."""

import json

from loop.report import reward_curves


def test_reward_curves_leave_out_a_torn_last_line(tmp_path):
    run = tmp_path / "round-1" / "learned"
    run.mkdir(parents=True)
    lines = [json.dumps({"step": s, "reward": 0.1 * s}) for s in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("\n".join(lines + ['{"step": 4, "rew']))  # the writer was killed mid-line
    result = {"rounds": [{"round": 1}], "dirs": {"round-1/learned": str(run)}}
    (line,) = reward_curves("captioning", result).axes[0].get_lines()
    assert list(line.get_xdata()) == [1, 2, 3] and list(line.get_ydata()) == [0.1, 0.2, 0.1 * 3]


def test_no_hand_written_metrics_jsonl_reader_is_left():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for package in ("vrlhf", "labeler", "reward_model", "tuner", "loop", "bench"):
        for path in (root / package).rglob("*.py"):
            text = path.read_text()
            if path.name != "rundir.py" and "metrics.jsonl" in text:
                assert "json.loads(line" not in text, f"{path}: read metrics.jsonl with vrlhf.rundir.read_metrics"
