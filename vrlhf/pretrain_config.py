"""`PretrainConfig`: every flag of `vrlhf pretrain` with its help line, in a module that imports no torch, so that
`vrlhf pretrain --help` and a mistyped flag are answered before the heavy imports (`vrlhf.cli.LIGHT_CONFIGS`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vrlhf.run_config import RunConfig, override


@dataclass
class PretrainConfig(RunConfig):
    """The shared flags (vrlhf.run_config: task, data, out, the optimiser, precision, seed) with pretraining's own
    defaults, and the model's shape, early stopping and held-out split."""

    data: str = override(RunConfig, "data", "data/shapes")
    out: str = override(RunConfig, "out", "runs/pretrain", help="output model directory (best checkpoint)")
    steps: int = override(RunConfig, "steps", 4000, help="maximum optimisation steps")
    batch_size: int = override(RunConfig, "batch_size", 64, help="images per step (per process)")
    lr: float = override(RunConfig, "lr", 1e-3, help="peak AdamW learning rate (cosine decay, 5%% warm-up)")
    weight_decay: float = override(RunConfig, "weight_decay", 0.01)
    eval_every: int = field(default=200, metadata={"help": "steps between held-out evaluations"})
    eval_images: int = field(default=200, metadata={"help": "held-out images used for loss and greedy metrics"})
    patience: int = field(default=4, metadata={
        "help": "stop after this many evaluations without a better held-out loss"})
    test_fraction: float = field(default=0.1, metadata={"help": "held-out fraction when --data has no test/ split "
                                                                "(chosen by a hash of the row id: `vrlhf tune` "
                                                                "holds out the same rows)"})
    image_size: int = field(default=48, metadata={"help": "policy input size in pixels"})
    patch_size: int = field(default=8, metadata={"help": "ViT patch size in pixels (image_size must be a multiple)"})
    hidden_size: int = field(default=128, metadata={"help": "transformer width (encoder and decoder)"})
    layers: int = field(default=3, metadata={"help": "layers in the encoder and in the decoder"})
    strict: bool = field(default=False, metadata={
        "help": "fail on a missing or unreadable image (default: skip and count)"})
    init: str = field(default="", metadata={"help": "start from this policy instead of a fresh model: a directory "
                                                    "(ours, or any supported captioner / VLM) or a hub id"})
