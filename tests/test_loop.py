"""A reduced `vrlhf demo --simulate --rounds 2`: round 2 labels the round-1 policies, its reward model learns from
both rounds' labels, every figure is in summary.json and the report shows both rounds."""

import json
from dataclasses import replace

import pytest
import torch

from loop.demo import DemoConfig, demo_tune, simulate
from vrlhf.tasks import get_task


@pytest.mark.timeout(900)
def test_two_rounds_label_the_round_one_policies(tmp_path):
    from vrlhf.shapes import ShapesConfig, write_shapes

    write_shapes(ShapesConfig(out=str(tmp_path / "shapes"), n=120, test_fraction=0.1))
    cfg = DemoConfig(simulate=True, workdir=str(tmp_path), data=str(tmp_path / "shapes"),
                     tasks="captioning,colorization", rounds=2, labels=16,
                     labels_later=12, annotators=3, eval_images=6, best_of=2, rm_epochs=2,
                     tune=replace(demo_tune(), steps=2, batch_size=4, k=2))
    summary = simulate(cfg)

    from labeler.store import Store
    from reward_model import load_reward_model
    from reward_model.data import load_export
    from vrlhf.data import load_rows
    from vrlhf.tasks import get_task

    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["tasks"].keys() == {"captioning", "colorization"}
    store = Store(str(tmp_path / "labels.sqlite"))
    rounds = store.rounds()
    votes = store.votes()
    report = (tmp_path / "report.html").read_text()
    for task in ("captioning", "colorization"):
        result = summary["tasks"][task]
        r1, r2 = result["rounds"]
        mine = {r["id"]: r for r in rounds if r["task"] == task}
        first = [mine[c["round_id"]] for c in r1["comparisons"]]
        second = [mine[c["round_id"]] for c in r2["comparisons"]]
        mle = str(get_task(task).DEMO_POLICY.resolve())
        # round 1: pairs of MLE samples; round 2: the round-1 policies, against MLE and each other, all complete
        assert {r["policy_path"] for r in first} == {mle}
        round1_learned = str((tmp_path / task / "round-1" / "learned" / "final").resolve())
        metric = str((tmp_path / task / "metric" / "final").resolve())
        sources = {r["policy_path"] for r in second}
        assert round1_learned in sources and metric in sources and mle in {
            r["policy_path"] for r in rounds if r["part_of"] in {s["id"] for s in second}}
        assert all(r["complete"] for r in first + second)
        # labels came over HTTP from simulated annotators, one vote per comparison
        task_votes = [v for v in votes if v["task"] == task]
        assert len(task_votes) == 16 + 12 == r1["labeling"]["votes"] + r2["labeling"]["votes"]
        assert {v["annotator"] for v in task_votes} <= {f"sim-{task}-{i}" for i in (1, 2, 3)}
        # round 2's reward model learned from both rounds' labels
        export = load_export(tmp_path / task / "round-2" / "export")
        r1_comparisons = {v["comparison_id"] for v in task_votes if v["round_id"] in {r["id"] for r in first}}
        assert set(export["comparison_id"]) & r1_comparisons and set(export["comparison_id"]) - r1_comparisons
        usable = sum(c != r for c, r in zip(export["chosen"], export["rejected"]))  # chosen == rejected is dropped
        best = r2["reward_model"]
        assert best["train_pairs"] + best["eval_pairs"] == usable and r2["export"]["pairs"] > r1["export"]["pairs"]
        rm = load_reward_model(tmp_path / task / "round-2" / "reward-model")
        rows = load_rows(tmp_path / "shapes" / "test", limit=2)
        t = get_task(task)
        policy = t.load_policy(tmp_path / task / "round-2" / "learned" / "final")
        outputs = t.decode(policy, rows, policy.greedy(t.pixel_values(policy, [r["image"] for r in rows])).tokens)
        assert torch.isfinite(rm.score(rows, outputs)).all()
        # every figure: per round the tracks and best-of-n against MLE, and the rows that do not depend on rounds
        for record in (r1, r2):
            assert set(record["evaluation"]) == {"learned", "both", "best_of_n"}
            for metrics in record["evaluation"].values():
                assert 0 <= metrics["win_rate_vs_mle_greedy"] <= 1 and 0 <= metrics["win_rate_vs_mle_sampled"] <= 1
        assert set(result["fixed"]) == {"mle", "metric", "oracle", "ideal"}
        assert {"sampling", "labeling", "reward_model", "tuning", "evaluation"} <= set(result["seconds"])
        if task == "captioning":  # the ideal caption states the whole truth: the oracle's best possible score
            perfect = sum(len(r["attributes"]["shapes"]) for r in load_rows(tmp_path / "shapes" / "test", limit=6)) / 6
            assert result["fixed"]["ideal"]["oracle_score"] == pytest.approx(perfect)
    # the report: both rounds in each task's table, a win-rate plot and sample grids
    assert report.count("<td>2</td>") >= 2 * 3 and report.count("<td>1</td>") >= 2 * 3
    assert report.count("data:image/png;base64,") >= 2 * (2 + 8)


@pytest.mark.parametrize("k", [2, 4])
def test_simulated_judgment_is_drawn_in_sampling_order_whatever_the_shown_order(tmp_path, k):
    import numpy as np

    from labeler.store import Store
    from loop.simulated import judgment
    from vrlhf.shapes import caption, make_shapes
    from vrlhf.tasks import caption_oracle

    row = make_shapes(3, seed=2)[2]
    rng = np.random.default_rng(0)
    outputs = [caption(row["attributes"]["shapes"], rng)] + [caption_oracle.corrupt(row, rng) for _ in range(k - 1)]
    store = Store(tmp_path / "s.sqlite")
    round_id = store.add_round("captioning", "/p", k)
    store.add_comparison(round_id, row["id"], row["image"], outputs)
    store.finish_round(round_id)
    views = [store.next_comparison(name) for name in ("ann-a", "ann-b", "ann-c")]  # overlap 1: one gets it
    view = next(v for v in views if v)
    # the same view shown in another order: the judgment names other positions but the same candidates
    flipped = dict(view, candidates=[dict(c, position="ABCD"[i]) for i, c in enumerate(reversed(view["candidates"]))])
    by_position = lambda v: {c["position"]: c["candidate_id"] for c in v["candidates"]}  # noqa: E731
    results = []
    for v in (view, flipped):
        choice, ranking = judgment(get_task(v["task"]), v, row, store, seed=7)
        ids = by_position(v)
        results.append([ids[p] for p in ranking] if k > 2 else (choice, ids.get(choice.upper())))
    if k > 2:
        assert results[0] == results[1] and sorted(results[0]) == sorted(c["candidate_id"] for c in view["candidates"])
        expected = caption_oracle.rank(row, outputs, np.random.default_rng([7, view["comparison_id"]]))
        ordered = sorted(c["candidate_id"] for c in view["candidates"])
        assert results[0] == [ordered[i] for i in expected]
    else:
        assert results[0][1] == results[1][1] or results[0][0] == results[1][0] == "tie"
