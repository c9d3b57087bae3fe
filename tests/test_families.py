"""Any supported checkpoint as a policy: tiny random models of every family, saved with save_pretrained and their
own processors (no policy.json), loaded through `--policy DIR`; our sampler agrees with teacher forcing and with the
family's own `generate`; bad directories, unsupported families and unreachable hub ids fail in one line."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vrlhf.errors import ModelError
from vrlhf.models import TINY_FAMILIES, tiny_checkpoint
from vrlhf.policy import POLICY_FILE
from vrlhf.tasks import get_task

TASK = get_task("captioning")
VLMS = ("llava", "idefics3", "paligemma")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {family: tiny_checkpoint(family, root / family, seed=1) for family in TINY_FAMILIES}


def images():
    """Three inputs of different sizes and aspect ratios: the model's processor must bring them to its input."""
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8))
    return [Image.new("RGB", (30, 20), "red"), Image.new("RGB", (17, 41), (20, 90, 200)), noise]


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_a_plain_checkpoint_samples_exact_log_probs(family, checkpoints):
    assert not (checkpoints[family] / POLICY_FILE).exists()
    policy = TASK.load_policy(checkpoints[family])
    pixels = TASK.pixel_values(policy, images())
    assert pixels.shape[0] == 3
    s = policy.sample(pixels, k=4, max_new_tokens=10, generator=torch.Generator().manual_seed(0))
    assert s.tokens.shape[0] == 12 and s.mask[:, 0].all()
    assert torch.allclose(policy.token_log_probs(pixels, s.tokens, s.mask, k=4), s.token_log_probs, atol=1e-5, rtol=0)
    captions = TASK.decode(policy, [{}] * 3, s.tokens, 4)
    assert len(captions) == 12 and all(isinstance(c, str) for c in captions)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_greedy_matches_the_models_own_generate(family, checkpoints):
    """Start token, stop ids, prompt and image preprocessing all come from the checkpoint: HF's greedy `generate`,
    fed by the model's own processor, produces the same tokens as our sampler."""
    policy = TASK.load_policy(checkpoints[family])
    inputs = images()
    ours = policy.greedy(TASK.pixel_values(policy, inputs), max_new_tokens=8)
    model = policy.model
    if family in VLMS:
        from vrlhf.families.vlm import messages

        if policy.processor.chat_template:
            batch = policy.processor.apply_chat_template([messages("Describe the image.", im) for im in inputs],
                                                         add_generation_prompt=True, tokenize=True, return_dict=True,
                                                         return_tensors="pt")
        else:  # PaliGemma
            batch = policy.processor(text=["<image>Describe the image."] * 3, images=inputs, return_tensors="pt")
            batch.pop("labels")
        theirs = model.generate(**batch, max_new_tokens=8, do_sample=False)[:, batch["input_ids"].shape[1]:]
    else:
        pixels = policy.processor(images=inputs, return_tensors="pt")["pixel_values"] if policy.processor else \
            policy.image_processor(inputs, return_tensors="pt")["pixel_values"]
        theirs = model.generate(pixel_values=pixels, max_new_tokens=8, do_sample=False)[:, 1:]  # without the start
    for row, mask, their_row in zip(ours.tokens.tolist(), ours.mask.tolist(), theirs.tolist()):
        mine = [t for t, m in zip(row, mask) if m]
        assert their_row[: len(mine)] == mine


@pytest.mark.parametrize("family", VLMS)
def test_vlm_runs_prompt_and_image_once_per_image(family, checkpoints, monkeypatch):
    policy = TASK.load_policy(checkpoints[family])
    pixels = TASK.pixel_values(policy, images()[:2])
    seen = []
    forward = policy.model.forward
    monkeypatch.setattr(policy.model, "forward", lambda **kw: seen.append(kw["input_ids"].shape) or forward(**kw))
    policy.sample(pixels, k=5, max_new_tokens=3, generator=torch.Generator().manual_seed(0))
    prompt = policy.prompt_ids.shape[1]
    assert seen[0] == (2, prompt)  # the prefill: 2 images, not 10 samples
    assert all(shape == (10, 1) for shape in seen[1:])  # then one token per sample from the shared cache


@pytest.mark.parametrize("family", VLMS)
def test_a_vlm_never_samples_its_image_placeholder(family, checkpoints):
    """A sampled image token would be read as an image slot; it is not a word either: banned from sampling and from
    teacher forcing alike (so the log-probs stay exact), even when the model prefers it."""
    policy = TASK.load_policy(checkpoints[family])
    image = policy.model.config.image_token_id
    pixels = TASK.pixel_values(policy, images())
    with torch.no_grad():  # make its logit dominate the first step of the first image (logits are linear in the row)
        first, _, _ = policy.adapter.first_step(policy, pixels)
        policy.model.get_output_embeddings().weight[image] *= 1e4 * first[0, image].sign()
        first, _, _ = policy.adapter.first_step(policy, pixels)
    assert (first.argmax(dim=-1) == image).any()  # the model itself would emit it (and then fail on it)
    s = policy.sample(pixels, k=8, max_new_tokens=6, generator=torch.Generator().manual_seed(0))
    assert not (s.tokens[s.mask] == image).any() and torch.isfinite(s.log_probs).all()
    assert torch.allclose(policy.log_prob(pixels, s.tokens, s.mask, k=8), s.log_probs, atol=1e-4, rtol=0)
    forced, mask = s.tokens.clone(), s.mask.clone()
    forced[:, -1], mask[:, -1] = image, True  # the last token is predicted, never fed
    assert torch.isinf(policy.log_prob(pixels, forced, mask, k=8)).all()


@pytest.mark.parametrize("family", ["blip", "idefics3"])
def test_saved_policy_reloads_with_identical_log_probs(family, checkpoints, tmp_path):
    policy = TASK.load_policy(checkpoints[family])
    policy.meta["prompt"] = "What is in the picture?"
    if family == "idefics3":
        from vrlhf.families import vlm

        vlm.prepare(policy)  # a new prompt: new prompt ids
    pixels = TASK.pixel_values(policy, images())
    s = policy.sample(pixels, k=2, max_new_tokens=6, generator=torch.Generator().manual_seed(0))
    policy.save(tmp_path)
    spec = json.loads((tmp_path / POLICY_FILE).read_text())
    assert spec["family"] == family and spec["meta"]["prompt"] == "What is in the picture?"
    loaded = TASK.load_policy(tmp_path)
    assert loaded.stop_token_ids == policy.stop_token_ids and loaded.meta == policy.meta
    if family == "idefics3":
        assert torch.equal(loaded.prompt_ids, policy.prompt_ids)
    assert torch.equal(loaded.log_prob(TASK.pixel_values(loaded, images()), s.tokens, s.mask, k=2),
                       policy.log_prob(pixels, s.tokens, s.mask, k=2))


# ---- bad input: one line each ---------------------------------------------------------------------------------


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_folder_that_is_no_model_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelError) as error:
        TASK.load_policy(tmp_path)
    assert "no config.json" in one_line(error) and str(tmp_path) in one_line(error)


def test_a_model_of_an_unsupported_family_is_refused(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=50)).save_pretrained(tmp_path)
    with pytest.raises(ModelError) as error:
        TASK.load_policy(tmp_path)
    message = one_line(error)
    assert "'gpt2'" in message and "llava" in message and "vision-encoder-decoder" in message


def test_a_hub_id_offline_fails_in_one_line_from_the_cli(tmp_path, capsys, monkeypatch):
    from vrlhf.cli import main
    from vrlhf.shapes import make_shapes, write_imagefolder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_imagefolder(make_shapes(4, seed=0, size=24), tmp_path / "data")
    code = main(["eval", "--task", "captioning", "--policy", "someone/tiny-captioner", "--data",
                 str(tmp_path / "data")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("vrlhf eval: someone/tiny-captioner:") and "HF_HUB_OFFLINE=1" in err


def test_a_hub_id_online_goes_to_from_pretrained(monkeypatch):
    """Without offline mode the id is handed to transformers as it is (the network is not touched: the call is
    recorded and answered as the Hub would answer an unknown repository)."""
    import huggingface_hub.constants
    import transformers

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    calls = []

    def from_pretrained(name, *args, **kwargs):
        calls.append(name)
        raise OSError(f"{name} is not a local folder and is not a valid model identifier listed on the Hub")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", from_pretrained)
    with pytest.raises(ModelError) as error:
        TASK.load_policy("Salesforce/blip-image-captioning-base")
    assert calls == ["Salesforce/blip-image-captioning-base"]
    assert "the Hub could not provide it" in one_line(error) and "HF_HUB_OFFLINE" not in one_line(error)
