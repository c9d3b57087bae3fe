"""`vrlhf train-reward` and `vrlhf eval-reward` end to end on a tiny simulated export."""

import json

from reward_model import evaluate, train
from reward_model.simulate import save_export, simulated_pairs
from vrlhf.tasks import get_task


def test_train_and_eval_commands(tmp_path, capsys):
    save_export(simulated_pairs(get_task("colorization"), 40, seed=3), tmp_path / "pairs")
    out = tmp_path / "rm"
    assert train.main(["--data", str(tmp_path / "pairs"), "--out", str(out), "--max-steps", "4", "--eval-every", "2",
                       "--batch-size", "8", "--eval-fraction", "0.25", "--hidden-size", "16", "--margin", "0.1",
                       "--center-rewards-coefficient", "0.01", "--no_progress"]) == 0
    written = {p.name for p in out.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "progress.json", "reward_config.json", "model.safetensors"} <= written
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records[:-1]] == [2, 4]
    assert {"eval_accuracy", "eval_margin", "eval_ece", "train_loss"} <= set(records[0])
    assert records[-1]["summary"]["best"]["step"] in (2, 4) and records[-1]["summary"]["pairs_per_sec"] > 0
    capsys.readouterr()
    assert evaluate.main(["--model", str(out), "--data", str(tmp_path / "pairs"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["task"] == "colorization" and metrics["pairs"] == 40 and 0 <= metrics["accuracy"] <= 1


def test_default_image_encoder_is_the_demo_captioner_or_a_clear_fallback(monkeypatch, tmp_path):
    from vrlhf.tasks import captioning

    assert train.resolve_image_encoder("default", captioning) == (str(captioning.REWARD_IMAGE_ENCODER), None)
    assert captioning.REWARD_IMAGE_ENCODER == captioning.DEMO_POLICY  # the demo captioner's ViT
    assert train.resolve_image_encoder("default", get_task("colorization")) == ("", None)  # the tiny CNN
    assert train.resolve_image_encoder("", captioning) == ("", None)
    assert train.resolve_image_encoder("some/dir", captioning) == ("some/dir", None)
    monkeypatch.setattr(captioning, "REWARD_IMAGE_ENCODER", tmp_path / "missing")
    encoder, note = train.resolve_image_encoder("default", captioning)
    assert encoder == "" and "missing" in note and "tiny encoder" in note
