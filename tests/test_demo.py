"""A reduced `vrlhf demo --simulate`: every stage's artefact exists and loads, the report renders, votes came over HTTP."""

import json

import pytest
import torch

from vrlhf.demo import DemoConfig, simulate


@pytest.mark.timeout(900)
def test_simulated_loop_produces_every_artefact(tmp_path):
    cfg = DemoConfig(simulate=True, workdir=str(tmp_path), tasks="captioning,colorization", labels=24, annotators=3,
                     tune_steps=2, tune_batch=4, tune_k=2, eval_images=6)
    summary = simulate(cfg)

    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["tasks"].keys() == {"captioning", "colorization"}
    report = (tmp_path / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 2 * (1 + 6)  # reward curves + sample grid images per task

    from labeler.store import Store
    from reward_model import load_reward_model
    from vrlhf.data import load_rows
    from vrlhf.tasks import get_task

    store = Store(str(tmp_path / "labels.sqlite"))
    votes = store.votes()
    for task in ("captioning", "colorization"):
        result = summary["tasks"][task]
        task_votes = [v for v in votes if v["task"] == task]
        # the HTTP path was used: every vote carries a simulated annotator's name, one per comparison
        assert len(task_votes) == 24 == result["labeling"]["votes"]
        assert {v["annotator"] for v in task_votes} <= {f"sim-{task}-{i}" for i in (1, 2, 3)}
        assert result["export"]["pairs"] > 0
        rm = load_reward_model(tmp_path / f"rm-{task}")
        rows = load_rows(tmp_path / "shapes" / "test", limit=2)
        t = get_task(task)
        policy = t.load_policy(tmp_path / f"tune-{task}-learned" / "final")
        outputs = t.decode(policy, rows, policy.greedy(t.pixel_values(policy, [r["image"] for r in rows])).tokens)
        assert torch.isfinite(rm.score(rows, outputs)).all()
        assert set(result["evaluation"]) == {"mle", "metric", "learned", "both", "references"}
        assert {"sampling", "labeling", "reward_model", "tune_learned", "evaluation"} <= set(result["seconds"])
        assert 0 <= result["evaluation"]["learned"]["win_rate_vs_mle_sampled"] <= 1
        if task == "captioning":  # the references row states the truth: the oracle's best possible score
            perfect = sum(len(r["attributes"]["shapes"]) for r in load_rows(tmp_path / "shapes" / "test", limit=6)) / 6
            assert result["evaluation"]["references"]["oracle_score"] == pytest.approx(perfect)
        # the second round: the tuned policy's candidates were added to the same database
        assert result["second_round"] > result["round"]
