"""Teacher forcing and sampling without the GPU's hidden costs (issue #23 rows 9-10): no (N, T, V) logits tensor, the
vision tower once per image, no host round trip per sampled token; the numbers stay those of the plain computation."""

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_models import FAMILIES, IMAGE, VOCAB, tiny_ved
from torch.utils._python_dispatch import TorchDispatchMode

import vrlhf.policy
from vrlhf.models import tiny_checkpoint
from vrlhf.policy import SequencePolicy
from vrlhf.tasks import get_task


class Recorder(TorchDispatchMode):
    """Every aten op run inside (backward passes included) and the largest (rows, T, V) tensor."""

    def __init__(self, vocab: int = VOCAB):
        super().__init__()
        self.vocab, self.largest_logits, self.ops = vocab, 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.append(str(func))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor) and tensor.dim() == 3 and tensor.shape[-1] == self.vocab:
                self.largest_logits = max(self.largest_logits, tensor.numel())
        return out


def full_log_probs(policy, pixels, tokens, mask, k, temperature):
    """The plain computation: all logits, log_softmax over the vocabulary, the targets picked."""
    logits = policy.adapter.teacher_forced_logits(policy, pixels, tokens, k)  # (N, T, V)
    picked = F.log_softmax(logits.float() / temperature, dim=-1).gather(2, tokens[:, :, None]).squeeze(2)
    return torch.where(mask, picked, 0.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_teacher_forcing_holds_a_few_rows_of_logits_and_gives_the_full_numbers_and_gradients(family, monkeypatch):
    policy = FAMILIES[family]()
    pixels = torch.randn(3, 3, IMAGE, IMAGE)
    s = policy.sample(pixels, k=4, generator=torch.Generator().manual_seed(0))
    n, length = s.tokens.shape
    # chunks of 2 of the 12 rows (raising=False: the test also runs against code without chunks, and fails there)
    monkeypatch.setattr(vrlhf.policy, "LOGITS_PER_CHUNK", 2 * length * VOCAB, raising=False)

    want = full_log_probs(policy, pixels, s.tokens, s.mask, 4, 0.7)
    want.sum().backward()
    want_grads = {name: p.grad.clone() for name, p in policy.model.named_parameters() if p.grad is not None}
    policy.model.zero_grad()

    with Recorder() as seen:
        got = policy.token_log_probs(pixels, s.tokens, s.mask, k=4, temperature=0.7)
        got.sum().backward()
    assert seen.largest_logits <= 2 * length * VOCAB < n * length * VOCAB  # never all 12 rows' logits at once
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    grads = {name: p.grad for name, p in policy.model.named_parameters() if p.grad is not None}
    assert grads.keys() == want_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, want_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    # the model's output head is back in place: sampling and HF's own forward still give logits
    assert policy.adapter.teacher_forced_logits(policy, pixels, s.tokens, 4).shape[-1] == VOCAB


VISION_TOWERS = {"llava": "model.vision_tower", "idefics3": "model.vision_model", "paligemma": "model.vision_tower"}


@pytest.mark.parametrize("family", VISION_TOWERS)
def test_vlm_teacher_forcing_runs_the_vision_tower_once_per_image(family, tmp_path):
    task = get_task("captioning")
    policy = task.load_policy(tiny_checkpoint(family, tmp_path / family, seed=1))
    pixels = task.pixel_values(policy, [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue")])
    s = policy.sample(pixels, k=5, max_new_tokens=4, generator=torch.Generator().manual_seed(0))
    images_seen = []
    tower = policy.model.get_submodule(VISION_TOWERS[family])
    hook = tower.register_forward_hook(lambda module, args, kwargs, out: images_seen.append(
        (args[0] if args else kwargs["pixel_values"]).shape[0]), with_kwargs=True)
    log_probs = policy.log_prob(pixels, s.tokens, s.mask, k=5)
    hook.remove()
    assert images_seen == [2]  # 2 images, not 10 samples
    torch.testing.assert_close(log_probs, s.log_probs, atol=1e-5, rtol=0)
    log_probs.sum().backward()  # the gradient reaches the vision tower through the shared prefill
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.parameters())


def early_stopper():
    """Half the vocabulary ends a sequence: every sample ends after a few tokens, well before the budget."""
    return SequencePolicy(tiny_ved().model, start_token_id=0, eos_token_id=list(range(1, VOCAB // 2)),
                          pad_token_id=VOCAB - 1, max_new_tokens=12)


def test_reading_the_finished_flag_one_step_late_changes_no_sample_and_no_random_number(monkeypatch):
    """On a GPU the sampler reads "all ended" one step late (no sync per token); the samples, their log-probs and
    the generator's state afterwards are exactly those of reading it at once."""
    policy, pixels = early_stopper(), torch.randn(3, 3, IMAGE, IMAGE)
    results = {}
    for late in (False, True):
        monkeypatch.setattr(vrlhf.policy, "reads_flag_late", lambda device, late=late: late, raising=False)
        generator = torch.Generator().manual_seed(0)
        s = policy.sample(pixels, k=4, generator=generator)
        results[late] = (s, generator.get_state())
    (now, state_now), (late, state_late) = results[False], results[True]
    assert now.finished.all() and now.tokens.shape[1] < 12  # every sample ended early: the late read mattered
    for field in ("tokens", "mask", "token_log_probs", "finished"):
        assert torch.equal(getattr(now, field), getattr(late, field)), field
    assert torch.equal(state_now, state_late)


def test_sampling_copies_the_banned_ids_to_the_device_once_not_per_token(tmp_path):
    """A VLM bans its image placeholder at every step; the ids become a tensor once per call, not once per token."""
    task = get_task("captioning")
    policy = task.load_policy(tiny_checkpoint("llava", tmp_path / "llava", seed=1))
    pixels = task.pixel_values(policy, [Image.new("RGB", (16, 16), "red")])
    fresh = {}
    for budget in (2, 8):
        with Recorder(vocab=0) as seen:
            s = policy.sample(pixels, k=64, max_new_tokens=budget, generator=torch.Generator().manual_seed(0))
        assert s.tokens.shape[1] == budget  # 64 samples of random weights: some run to the budget
        fresh[budget] = seen.ops.count("aten.lift_fresh.default")  # tensors made from host data
    assert fresh[8] == fresh[2]
