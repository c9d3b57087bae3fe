"""A tiny VLM through the whole loop: `vrlhf sample` into a store, `vrlhf tune` through TRL with CIDEr-D and a learned
caption reward, `vrlhf export` then `vrlhf dpo` on the clicks; every run's artefacts load back."""

import json

import pytest
import torch

from labeler.store import Store
from vrlhf.cli import main
from vrlhf.errors import ConfigError
from vrlhf.models import tiny_checkpoint
from vrlhf.tasks import get_task

TASK = get_task("captioning")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Shapes data, a tiny LLaVA whose tokenizer knows their words, a tiny caption reward model, and a store with
    the VLM's samples labelled (ties included) and exported."""
    from reward_model import build_reward_model
    from vrlhf.shapes import make_shapes, write_imagefolder

    root = tmp_path_factory.mktemp("vlm")
    rows = make_shapes(36, seed=0, size=24)
    write_imagefolder(rows[:28], root / "data" / "train")
    write_imagefolder(rows[28:], root / "data" / "test")
    tiny_checkpoint("llava", root / "llava", texts=[c for r in rows for c in r["captions"]], seed=0)
    build_reward_model(get_task("captioning"), encoder="vit", image_size=24, patch_size=6, vit_hidden=24, vit_layers=1,
                       hidden_size=16).save_pretrained(root / "rm")
    assert main(["sample", "--task", "captioning", "--policy", str(root / "llava"), "--data",
                 str(root / "data" / "train"), "--db", str(root / "labels.db"), "--k", "2", "--n", "10"]) == 0
    store = Store(root / "labels.db")
    for i in range(10):
        view = store.next_comparison("ann")
        store.vote(view["token"], "tie" if i == 0 else "ab"[i % 2], annotator="ann")
    assert main(["export", "--db", str(root / "labels.db"), "--out", str(root / "export")]) == 0
    assert main(["export", "--db", str(root / "labels.db"), "--out", str(root / "export-trl"), "--format", "trl"]) == 0
    return root


def test_vlm_samples_go_into_the_store(world):
    store = Store(world / "labels.db")
    votes = store.votes()
    assert len(votes) == 10 and store.counts()["comparisons"] == 10
    texts = [c["text"] for c in store.candidates({c for v in votes for c in v["candidate_ids"]}).values()]
    assert len(texts) == 20 and all(isinstance(t, str) for t in texts) and len(set(texts)) > 10


def test_tune_through_trl_with_cider_and_a_learned_reward(world):
    """`--backend auto` picks TRL for a VLM; the run directory is our loop's, the final policy loads and moved."""
    out = world / "tune"
    assert main(["tune", "--task", "captioning", "--policy", str(world / "llava"), "--data", str(world / "data"),
                 "--out", str(out), "--reward", "cider_d=1.0", "--reward", f"learned:{world / 'rm'}=0.5", "--k", "2",
                 "--batch_size", "2", "--steps", "3", "--lr", "1e-3", "--warmup_steps", "0", "--eval_every", "2",
                 "--eval_size", "4", "--num_show", "2", "--max_new_tokens", "6", "--log_with", "none"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for key in ("reward/cider_d", "reward/learned:rm", "loss", "grad_norm", "tokens_per_seq", "time/sample",
                "time/reward", "time/forward_backward", "time/other"):
        assert all(key in r for r in steps), key
    assert all(r["time/sample"] > 0 and r["time/forward_backward"] > 0 for r in steps)
    assert [r["step"] for r in records if "eval/cider_d" in r] == [0, 2, 3]
    assert (out / "config.yaml").is_file() and (out / "samples_before.json").is_file()
    before, after = TASK.load_policy(world / "llava"), TASK.load_policy(out / "final")
    assert type(after.model) is type(before.model) and after.meta["prompt"] == "Describe the image."
    start = dict(before.model.named_parameters())
    moved = [n for n, p in after.model.named_parameters() if not torch.equal(p, start[n])]
    assert any("lm_head" in n for n in moved) and any("vision_tower" in n for n in moved)
    assert json.loads((out / "samples_after.json").read_text())[0]["samples"]  # sampled by the tuned policy


def test_trl_reward_functions_score_each_completion_against_its_own_row(world):
    """TRL hands reward functions the completions of a generation batch with a `row_index` per completion; ours
    score each against the row it was generated for, as our loop does (a mixed-up row gets another CIDEr-D)."""
    from tuner.rewards import build_reward, parse_reward_specs
    from tuner.trl_backend import Clock, reward_functions
    from vrlhf.data import load_rows

    rows = load_rows(world / "data" / "train")
    policy = TASK.load_policy(world / "llava")
    mix = build_reward(TASK, parse_reward_specs(["cider_d=1.0"]), rows)
    index = [3, 3, 7, 7, 1, 1]  # TRL repeats each prompt k = 2 times in a row
    captions = [rows[3]["captions"][0], rows[7]["captions"][0], rows[7]["captions"][0], "a", rows[1]["captions"][1],
                rows[3]["captions"][0]]
    tokens, mask = TASK.encode_captions(policy, captions)
    ids = [t[m].tolist() for t, m in zip(tokens, mask)]
    (cider,) = reward_functions(TASK, policy, mix, rows, Clock())
    got = cider(prompts=[None] * 6, completions=[None] * 6, completion_ids=ids, row_index=index)
    want, _ = mix([rows[3], rows[7], rows[1]], TASK.decode(policy, rows, tokens, 2))
    assert got == pytest.approx(want.tolist())
    assert got[0] > got[1] and got[2] > got[3]  # its own reference scores, another row's does not


def test_dpo_on_the_exported_clicks(world):
    """`vrlhf export --format trl` writes exactly TRL's documented vision preference format (the default export
    converts to the same pairs; ties left out), DPOTrainer trains on it, and the chosen captions gain
    log-probability over the rejected ones."""
    import datasets

    from reward_model.data import load_export
    from vrlhf.exports import to_trl_preferences, trl_preference_features

    pairs = datasets.load_from_disk(str(world / "export-trl"))
    assert len(pairs) == 9 and pairs.features == trl_preference_features()
    assert pairs.to_dict() == to_trl_preferences(load_export(world / "export")).to_dict()
    first = pairs[0]
    assert first["prompt"] == [{"role": "user", "content": [{"type": "image", "text": None},
                                                            {"type": "text", "text": "Describe the image."}]}]
    assert first["chosen"][0]["role"] == "assistant" and len(first["images"]) == 1

    def margin(policy):
        pixels = TASK.pixel_values(policy, [p["images"][0] for p in pairs])
        texts = [p[side][0]["content"][0]["text"] for p in pairs for side in ("chosen", "rejected")]
        tokens, mask = TASK.encode_captions(policy, texts)
        with torch.no_grad():
            log_p = policy.log_prob(pixels, tokens, mask, k=2).view(-1, 2)
        return (log_p[:, 0] - log_p[:, 1]).mean().item()

    out = world / "dpo"
    assert main(["dpo", "--policy", str(world / "llava"), "--data", str(world / "export-trl"), "--out", str(out),
                 "--steps", "4", "--batch_size", "3", "--lr", "3e-3", "--warmup_steps", "0",
                 "--eval_data", str(world / "data" / "test"), "--eval_size", "2"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert "rewards/margins" in records[1] and [r["step"] for r in records if "eval/cider_d" in r] == [0, 4]
    before, after = TASK.load_policy(world / "llava"), TASK.load_policy(out / "final")
    assert margin(after) > margin(before) + 0.1


def test_trl_backend_refuses_what_trl_cannot_tune(world, tmp_path):
    from tuner.config import TuneConfig
    from tuner.train import tune

    tiny_checkpoint("blip", tmp_path / "blip")
    (tiny_checkpoint("llava", tmp_path / "bare-llava") / "chat_template.jinja").unlink()
    common = dict(task="captioning", data=str(world / "data"), out=str(tmp_path / "run"), k=2, batch_size=2,
                  steps=1, log_with="none")
    with pytest.raises(ConfigError, match="TRL tunes decoder-only vision-language models only"):
        tune(TuneConfig(policy=str(tmp_path / "blip"), backend="trl", **common))
    with pytest.raises(ConfigError, match="no chat template"):
        tune(TuneConfig(policy=str(tmp_path / "bare-llava"), backend="trl", **common))
    with pytest.raises(ConfigError, match="--baseline greedy"):
        tune(TuneConfig(policy=str(world / "llava"), baseline="greedy", **common))


def test_our_loop_tunes_a_vlm_too(world, tmp_path):
    """`--backend ours` runs our REINFORCE loop on a VLM through the same sampler (PaliGemma, which has no chat
    template for TRL), with the KL anchor a copy of the starting policy."""
    tiny_checkpoint("paligemma", tmp_path / "paligemma", texts=["a red circle", "a blue square"])
    assert main(["tune", "--task", "captioning", "--policy", str(tmp_path / "paligemma"), "--data",
                 str(world / "data"), "--out", str(tmp_path / "run"), "--backend", "ours", "--k", "2",
                 "--batch_size", "2", "--steps", "2", "--kl_coef", "0.1", "--eval_every", "0", "--save_every", "0",
                 "--eval_size", "2", "--num_show", "0", "--max_new_tokens", "5", "--log_with", "none"]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "kl" in r] == [1, 2]
    assert TASK.load_policy(tmp_path / "run" / "final").family == "paligemma"
