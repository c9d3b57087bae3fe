"""Mixed precision as a GPU run sees it, checked on the CPU: the launcher's choice is honoured, fp16 clips unscaled
gradients, bf16 gives KL = 0 at step 0 against an identical anchor, trained weights load in fp32."""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from tuner.config import TuneConfig
from tuner.train import micro_batches, optimizer_step, policy_loss, rollout, setup


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Accelerate keeps one process-wide state and refuses another precision once set: start and end afresh."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_the_launchers_mixed_precision_is_honoured(tiny_config, monkeypatch):
    """`accelerate launch --mixed_precision bf16` sets ACCELERATE_MIXED_PRECISION; no flag leaves the choice to it,
    and a flag overrides it."""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert setup(tiny_config).accelerator.mixed_precision == "bf16"
    AcceleratorState._reset_state(reset_partial_state=True)
    tiny_config.mixed_precision, tiny_config.out = "no", tiny_config.out + "-flag"
    assert setup(tiny_config).accelerator.mixed_precision == "no"


def test_every_command_leaves_the_precision_to_the_launcher_by_default(monkeypatch):
    from reward_model.train import TrainRewardConfig
    from tuner.dpo import DPOTuneConfig
    from tuner.trl_backend import precision_args
    from vrlhf.errors import ConfigError
    from vrlhf.pretrain import PretrainConfig
    from vrlhf.training import resolve_mixed_precision

    for config in (TuneConfig, PretrainConfig, TrainRewardConfig, DPOTuneConfig):
        assert resolve_mixed_precision(config().mixed_precision) is None, config.__name__  # Accelerate's default
    with pytest.raises(ConfigError, match="--mixed_precision 'fp32'"):
        resolve_mixed_precision("fp32")
    # TRL and DPO: TrainingArguments' bf16/fp16 from the flag, else the launcher's; gradient checkpointing on a GPU
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert precision_args("", cpu=False) == {"bf16": True, "fp16": False, "activation_checkpointing": True}
    assert precision_args("", cpu=True) == {"bf16": True, "fp16": False, "activation_checkpointing": False}
    assert precision_args("no", cpu=False) == {"bf16": False, "fp16": False, "activation_checkpointing": True}
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    assert precision_args("", cpu=False)["bf16"] is False
    assert precision_args("fp16", cpu=False)["fp16"] is True
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        precision_args("fp16", cpu=True)


def test_trl_takes_a_ranks_share_of_the_batch_in_passes_of_bounded_size():
    """32 images × 16 samples on one GPU: 512 completions per step, generated at once but trained 64 at a time (TRL
    used to get per_device_train_batch_size = 512); the global batch is the same on any number of processes."""
    from trl import GRPOConfig

    from tuner.trl_backend import COMPLETIONS_PER_PASS, batch_sizes

    for world, grad_accum, want in [(1, 1, (64, 8)), (2, 1, (64, 4)), (8, 1, (64, 1)), (8, 2, (32, 2)),
                                    (16, 1, (32, 1))]:
        cfg = TuneConfig(batch_size=32, k=16, grad_accum=grad_accum)
        sizes = batch_sizes(cfg, world)
        assert (sizes["per_device_train_batch_size"], sizes["gradient_accumulation_steps"]) == want
        assert want[0] * want[1] * world == 32 * 16 and want[0] <= COMPLETIONS_PER_PASS
    args = GRPOConfig(output_dir="/tmp/unused", num_generations=16, use_cpu=True, bf16=False,
                      **batch_sizes(TuneConfig(batch_size=32, k=16), 1))
    assert args.generation_batch_size == 512  # one generation batch per optimiser step, as before
    assert batch_sizes(TuneConfig(batch_size=3, k=5), 1) == {"per_device_train_batch_size": 15,
                                                            "gradient_accumulation_steps": 1}


def test_fp16_clips_the_unscaled_gradient_and_logs_its_true_norm():
    """With a GradScaler the gradients are scaled by 2^12 until the optimiser step unscales them: clipping them
    before that clipped the scaled norm, shrank the update by the loss scale and logged a scaled grad_norm."""
    accelerator = Accelerator(cpu=True, mixed_precision="fp16")
    # Accelerate makes no GradScaler on the CPU; torch's CPU GradScaler stands in for the CUDA one
    accelerator.scaler, accelerator.native_amp = torch.amp.GradScaler("cpu", init_scale=2.0**12), True
    layer = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    params = list(layer.parameters())
    optimizer = accelerator.prepare(torch.optim.SGD(params, lr=0.1))
    t = SimpleNamespace(accelerator=accelerator, params=params, optimizer=optimizer, state=SimpleNamespace(skipped=0),
                        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0))
    accelerator.backward((layer(torch.ones(1, 4)) ** 2).sum())  # d/dw (w·1)^2 = 2·10 = 20 per weight: norm 40
    assert layer.weight.grad[0, 0].item() == 20.0 * 2**12  # scaled, as a CUDA fp16 run sees it
    logs = defaultdict(list)
    optimizer_step(SimpleNamespace(max_grad_norm=1.0), t, True, logs, step=0)
    assert logs["grad_norm"] == [pytest.approx(40.0)]
    # clipped to norm 1: each of the 4 weights moves by lr × 20/40 = 0.05 (not 0.05 / 4096)
    torch.testing.assert_close(layer.weight.detach(), torch.tensor([[0.95, 1.95, 2.95, 3.95]]))


@pytest.mark.parametrize("lora_r", [0, 4])
def test_bf16_kl_is_zero_at_step_zero_against_an_identical_anchor(tiny_config, lora_r):
    """Under bf16 autocast the sampler's KV-cached log-probs differ from teacher forcing; the KL compares the
    policy's teacher-forced log-probs with the anchor's, so an identical anchor (a copy, or LoRA with the adapters
    off) gives exactly 0."""
    cfg = tiny_config
    cfg.mixed_precision, cfg.kl_coef, cfg.lora_r = "bf16", 0.1, lora_r
    t = setup(cfg)
    assert t.accelerator.mixed_precision == "bf16"
    _, batch = next(micro_batches(cfg, t, 0))
    generator = torch.Generator().manual_seed(0)
    pixel_values = t.task.pixel_values(t.policy, [r["image"] for r in batch]).to(t.accelerator.device)
    scored = rollout(cfg, t.task, t.policy, t.reward, batch, pixel_values, generator, autocast=t.accelerator.autocast)
    _, logs, finite = policy_loss(cfg, t.task, t.policy, t.reference, batch, pixel_values, scored, generator,
                                  t.accelerator.autocast)
    assert finite and logs["kl"] == 0.0
    # what the KL used to compare: the sampler's log-probs are not the teacher-forced ones under bf16
    with torch.no_grad(), t.accelerator.autocast():
        forced = t.policy.log_prob(pixel_values, scored.samples.tokens, scored.samples.mask, cfg.k)
    assert (scored.samples.log_probs - forced).abs().max() > 1e-4


def test_a_vlm_saved_in_bf16_loads_fp32_weights_to_train(tmp_path):
    """Hub VLMs are saved in bf16 and transformers loads the saved dtype; an AdamW step of lr 5e-5 on a bf16 weight
    of size ~1 rounds away (bf16's spacing there is 2^-7), so trained weights load in fp32."""
    from vrlhf import families
    from vrlhf.models import tiny_checkpoint

    path = tiny_checkpoint("llava", tmp_path / "llava")
    model, _ = families.load_model(path)
    model.to(torch.bfloat16).save_pretrained(path)
    model, _ = families.load_model(path)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    weight = torch.ones(8, dtype=torch.bfloat16)
    assert torch.equal(weight - 5e-5, weight)  # why: the update is lost in bf16
