"""The demo's lever switches (issue 19 item 7): `--dense on|off|auto` and `--marks_coef` reach the round's reward
model, `--best_of 0` leaves the best-of row out, and `--label_efficiency` adds one round per budget with marks on and
off, each in its own database, plotted in report.html."""

import json

import pytest

from loop.demo import DemoConfig
from loop.rounds import reward_model_settings
from vrlhf.cli import main
from vrlhf.tasks import get_task, task_names

# One round, one learned track, a few labels and steps: minutes of the real demo in seconds.
SMALL = ["--simulate", "--rounds", "1", "--labels", "8", "--annotators", "2", "--eval_images", "4", "--best_of", "0",
         "--rm_epochs", "1", "--tracks", "learned", "--no_metric_row", "--no_oracle_row", "--tune.steps", "1",
         "--tune.batch_size", "2", "--tune.k", "2", "--tune.eval_size", "4"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from vrlhf.shapes import ShapesConfig, write_shapes

    root = tmp_path_factory.mktemp("demo-levers")
    write_shapes(ShapesConfig(out=str(root / "shapes"), n=40, test_fraction=0.2))
    return root / "shapes"


def test_dense_and_marks_coef_are_what_the_round_trains():
    colorization, captioning = get_task("colorization"), get_task("captioning")
    on = reward_model_settings(DemoConfig(dense="on", marks_coef=0.25), colorization)
    assert on == {"dense": True, "marks_coef": 0.25, "image_size": 64}  # 64 px: the CNN's stride-8 stage on the grid
    assert reward_model_settings(DemoConfig(dense="on"), captioning) == {"dense": True, "marks_coef": 1.0}
    assert reward_model_settings(DemoConfig(dense="off"), colorization) == {"dense": False}
    for name in task_names():  # auto: the task's measured default (DEMO_DENSE; absent: the scalar model)
        task = get_task(name)
        assert reward_model_settings(DemoConfig(), task)["dense"] is getattr(task, "DEMO_DENSE", False)


def test_label_efficiency_runs_each_budget_with_and_without_marks(shapes, tmp_path):
    work = tmp_path / "work"
    assert main(["demo", *SMALL, "--tasks", "colorization", "--dense", "on", "--label_efficiency", "4,8",
                 "--workdir", str(work), "--data", str(shapes)]) == 0
    summary = json.loads((work / "summary.json").read_text())
    result = summary["tasks"]["colorization"]
    # the round's reward model is dense, and no best-of row was made
    config = json.loads((work / "colorization" / "round-1" / "reward-model" / "reward_config.json").read_text())
    assert config["dense"] is True and config["image_size"] == 64
    assert set(result["rounds"][0]["evaluation"]) == {"learned"}
    # every budget, marks on and off; the rounds' own first round (8 comparisons, marks on) is the (8, on) point
    curves = result["label_efficiency"]
    assert {m: sorted(int(n) for n in c) for m, c in curves.items()} == {"on": [4, 8], "off": [4, 8]}
    assert curves["on"]["8"]["win_rate_vs_mle_greedy"] == result["rounds"][0]["evaluation"]["learned"][
        "win_rate_vs_mle_greedy"]
    runs = work / "colorization" / "label-efficiency"
    assert sorted(p.name for p in runs.iterdir()) == ["marks-off-4", "marks-off-8", "marks-on-4"]
    from reward_model.data import load_export

    for name, marked in (("marks-on-4", True), ("marks-off-4", False), ("marks-off-8", False)):
        export = load_export(runs / name / "colorization" / "round-1" / "export")
        assert len(set(export["comparison_id"])) == int(name.rsplit("-", 1)[1])  # its own database, its own budget
        assert any(list(export["chosen_marks"]) + list(export["rejected_marks"])) is marked
    assert "Label efficiency" in (work / "report.html").read_text()


@pytest.mark.parametrize("flags, says", [
    (["--dense", "yes"], "--dense takes on, off or auto, not 'yes'"),
    (["--label_efficiency", "100,x"], "--label_efficiency takes comparison budgets"),
    (["--label_efficiency", "0,100"], "--label_efficiency takes comparison budgets"),
])
def test_a_bad_lever_flag_is_refused_in_one_line(tmp_path, capsys, flags, says):
    assert main(["demo", *SMALL, *flags, "--workdir", str(tmp_path / "work")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and says in error, error
    assert not (tmp_path / "work").exists()
