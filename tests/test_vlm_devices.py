"""Decoder-only VLMs on a GPU: what a VLM builds per call lands on the device of its inputs, and TRL's running reward
statistics survive a resume."""

import json

import pytest
import torch
from PIL import Image

from vrlhf.families import vlm
from vrlhf.models import tiny_checkpoint
from vrlhf.tasks import get_task

TASK = get_task("captioning")


def test_paligemma_token_type_ids_are_built_on_the_inputs_device(tmp_path):
    """The prompt's ids stay on the CPU (computed once per policy); the token types built per call must be on the
    device of the model's inputs (CUDA in a GPU run), not the prompt's. 'meta' stands in for the GPU here."""
    policy = TASK.load_policy(tiny_checkpoint("paligemma", tmp_path / "paligemma", texts=["a red circle"]))
    assert policy.prompt_ids.device.type == "cpu"
    types = vlm._extras(policy, 2, 5, 3, torch.device("meta"))["token_type_ids"]
    assert types.device.type == "meta" and types.shape == (2, 8)
    types = vlm._extras(policy, 2, 5, 3, torch.device("cpu"))["token_type_ids"]
    assert types.tolist() == [[0] * 5 + [1] * 3] * 2  # prefix bidirectional, answer causal
    # and the policy's own passes still run: sampling (prefill) and teacher forcing
    pixels = TASK.pixel_values(policy, [Image.new("RGB", (16, 16))])
    samples = policy.sample(pixels, 2, max_new_tokens=3, generator=torch.Generator().manual_seed(0))
    assert policy.log_prob(pixels, samples.tokens, samples.mask, 2).shape == (2,)


def test_trl_running_reward_statistics_are_checkpointed_and_restored(tmp_path):
    """`--reward_norm running` through TRL: the statistics go into each checkpoint and a resumed run continues them
    (4 completions per step: 4 after step 1, 8 after step 2; a fresh start would have 4 again). The oracle's scores
    vary where the untrained VLM's CIDEr-D is all zeros."""
    from tuner.config import TuneConfig
    from tuner.train import tune
    from vrlhf.shapes import make_shapes, write_imagefolder

    rows = make_shapes(12, seed=0, size=24)
    write_imagefolder(rows[:10], tmp_path / "data" / "train")
    write_imagefolder(rows[10:], tmp_path / "data" / "test")
    tiny_checkpoint("llava", tmp_path / "llava", texts=[c for r in rows for c in r["captions"]], seed=0)
    common = dict(task="captioning", policy=str(tmp_path / "llava"), data=str(tmp_path / "data"),
                  out=str(tmp_path / "run"), backend="trl", reward=["oracle=1"], reward_norm="running", k=2,
                  batch_size=2, save_every=1, eval_every=0, eval_size=2, num_show=0, max_new_tokens=4, warmup_steps=0,
                  log_with="none")
    tune(TuneConfig(steps=1, **common))
    first = json.loads((tmp_path / "run" / "checkpoints" / "checkpoint-1" / "reward_stats.json").read_text())
    assert first["oracle"]["count"] == 4
    tune(TuneConfig(steps=2, resume=True, **common))
    second = json.loads((tmp_path / "run" / "checkpoints" / "checkpoint-2" / "reward_stats.json").read_text())
    assert second["oracle"]["count"] == 8
    assert second["oracle"]["var"] > 0 and second["oracle"]["mean"] != first["oracle"]["mean"]


def test_trl_batch_normalisation_whitens_over_every_ranks_completions(tmp_path):
    """TRL calls each reward function on a rank's own completions; `--reward_norm batch` whitens with the mean and
    std of every rank's (gathered), not of this rank's alone. Here a second rank's scores are [10, 20, 30, 40]."""
    from tuner.rewards import build_reward, parse_reward_specs
    from tuner.trl_backend import Clock, reward_functions
    from vrlhf.shapes import make_shapes

    rows = make_shapes(2, seed=0, size=24)
    texts = [c for r in rows for c in r["captions"]]
    policy = TASK.load_policy(tiny_checkpoint("llava", tmp_path / "llava", texts=texts))
    mix = build_reward(TASK, parse_reward_specs(["oracle=1"]), rows, "batch")
    other_rank = torch.tensor([10.0, 20.0, 30.0, 40.0])
    (oracle,) = reward_functions(TASK, policy, mix, rows, Clock(), gather=lambda v: torch.cat([v, other_rank]))
    captions = [rows[0]["captions"][0], "a", rows[1]["captions"][0], "a red"]
    tokens, mask = TASK.encode_captions(policy, captions)
    got = oracle(prompts=[None] * 4, completions=[None] * 4, row_index=[0, 0, 1, 1],
                 completion_ids=[t[m].tolist() for t, m in zip(tokens, mask)])
    raw = mix.fns["oracle"](rows, TASK.decode(policy, rows, tokens, 2))
    everyone = torch.cat([torch.as_tensor(raw, dtype=torch.float32), other_rank])
    want = (torch.as_tensor(raw) - everyone.mean()) / (everyone.std(unbiased=False) + mix.eps)
    assert got == pytest.approx(want.tolist(), abs=1e-5)
    assert max(got) < 0  # every score of this rank is below the other rank's: whitened per rank, some would be > 0
