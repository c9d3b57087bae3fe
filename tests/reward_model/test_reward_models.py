"""Reward models: score shapes, save/load round trip, LoRA trains only adapters and head, CLIP backbone."""

import json

import pytest
import torch
from PIL import Image

from reward_model import build_reward_model, load_reward_model
from reward_model.losses import bradley_terry_loss
from vrlhf.tasks import get_task

TINY = dict(hidden_size=32, vit_hidden=48, vit_layers=1)


def _rows(n=3):
    return [{"id": str(i), "image": Image.new("RGB", (48, 48), (40 * i, 90, 200 - 40 * i)), "captions": [],
             "attributes": None} for i in range(n)]


def _colorizations(rows, k=2):
    return [Image.new("RGB", (48, 48), (30 * j, 60 * i, 90)) for i in range(len(rows)) for j in range(k)]


CAPTIONS = ["a red circle on the left", "a big blue square", "two shapes", "a green triangle",
            "a small yellow circle", "nothing here"]


@pytest.mark.parametrize("task,encoder", [("colorization", "cnn"), ("colorization", "vit"), ("captioning", "cnn")])
def test_save_load_gives_identical_scores(tmp_path, task, encoder):
    torch.manual_seed(0)
    model = build_reward_model(get_task(task), encoder=encoder, **TINY)
    rows = _rows()
    outputs = CAPTIONS if task == "captioning" else _colorizations(rows)
    scores = model.score(rows, outputs)
    assert scores.shape == (6,) and scores.dtype == torch.float32 and not scores.requires_grad
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"reward_config.json", "model.safetensors"} <= files and not any(f.endswith((".bin", ".pt", ".pkl"))
                                                                          for f in files)
    loaded = load_reward_model(tmp_path)
    assert loaded.task == task
    assert torch.equal(loaded.score(rows, outputs), scores)


def _train_steps(model, task, steps=3):
    rows = _rows(2)
    outputs = CAPTIONS[:4] if task == "captioning" else _colorizations(rows)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    inputs = model.inputs(rows, outputs)
    for _ in range(steps):
        r = model(**inputs)
        loss = bradley_terry_loss(r[0::2], r[1::2], torch.ones(2))
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("task", ["colorization", "captioning"])
def test_lora_changes_only_adapters_and_head(task):
    torch.manual_seed(0)
    model = build_reward_model(get_task(task), encoder="vit", lora_r=4, **TINY)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    backbone = ("vision.", "text.")
    assert trainable and all("lora_" in n or not n.startswith(backbone) for n in trainable)
    assert any("lora_" in n and n.startswith("text.") for n in trainable) == (task == "captioning")
    _train_steps(model, task)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    assert any("lora_" in n for n in changed) and any(not n.startswith(backbone) for n in changed)


def test_lora_model_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_reward_model(get_task("captioning"), encoder="vit", lora_r=2, **TINY)
    _train_steps(model, "captioning", steps=1)
    model.save_pretrained(tmp_path)
    rows = _rows()
    assert torch.equal(load_reward_model(tmp_path).score(rows, CAPTIONS), model.score(rows, CAPTIONS))


def test_clip_backbone(tmp_path):
    """Any CLIPModel directory can be the caption backbone (a tiny one built from a config here)."""
    from transformers import CLIPConfig, CLIPModel

    from reward_model.backbones import load_tokenizer

    cfg = CLIPConfig(text_config=dict(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=64, bos_token_id=101,
                                      eos_token_id=102, pad_token_id=0),
                     vision_config=dict(image_size=48, patch_size=12, hidden_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=64), projection_dim=16)
    CLIPModel(cfg).save_pretrained(tmp_path / "clip")
    load_tokenizer(None).save_pretrained(tmp_path / "clip")  # MiniLM's WordPiece vocabulary fits vocab_size
    model = build_reward_model(get_task("captioning"), clip=str(tmp_path / "clip"), hidden_size=16)
    rows = _rows()
    scores = model.score(rows, CAPTIONS)
    model.save_pretrained(tmp_path / "rm")
    assert json.loads((tmp_path / "rm" / "reward_config.json").read_text())["vision_config"]["model_type"] == "clip"
    assert torch.equal(load_reward_model(tmp_path / "rm").score(rows, CAPTIONS), scores)


def test_caption_attention_projects_each_image_once_with_the_same_numbers():
    from reward_model import build_reward_model

    torch.manual_seed(0)
    model = build_reward_model(get_task("captioning"), image_encoder="", encoder="vit", image_size=24, vit_hidden=24,
                               vit_layers=1, hidden_size=16).eval()
    batch, k, n, h = 3, 5, 7, 16
    queries, tokens = torch.randn(batch, k, h), torch.randn(batch, n, h)
    per_caption = model.attend(queries.reshape(batch * k, 1, h), tokens.repeat_interleave(k, 0),
                               tokens.repeat_interleave(k, 0), need_weights=False)[0].view(batch, k, h)
    torch.testing.assert_close(model._attend_per_image(queries, tokens), per_caption, atol=1e-6, rtol=1e-5)
