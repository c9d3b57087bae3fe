"""`PretrainConfig`: every flag of `vrlhf pretrain` with its help line, in a module that imports no torch, so that
`vrlhf pretrain --help` and a mistyped flag are answered before the heavy imports (`vrlhf.cli.LIGHT_CONFIGS`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PretrainConfig:
    task: str = field(default="captioning", metadata={"help": "captioning or colorization"})
    data: str = field(default="data/shapes", metadata={"help": "dataset dir (with train/ and test/, or one folder)"})
    out: str = field(default="runs/pretrain", metadata={"help": "output model directory (best checkpoint)"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace the run --out already holds (without it an earlier run is refused)"})
    steps: int = field(default=4000, metadata={"help": "maximum optimisation steps"})
    batch_size: int = field(default=64, metadata={"help": "images per step (per process)"})
    lr: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate (cosine decay, 5%% warm-up)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
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
    mixed_precision: str = field(default="", metadata={
        "help": "no | fp16 | bf16; empty: the launcher's (accelerate launch --mixed_precision, else no)"})
    strict: bool = field(default=False, metadata={
        "help": "fail on a missing or unreadable image (default: skip and count)"})
    init: str = field(default="", metadata={"help": "start from this policy instead of a fresh model: a directory "
                                                    "(ours, or any supported captioner / VLM) or a hub id"})
    image_column: str = field(default="image", metadata={"help": "image column of a Hugging Face --data"})
    caption_column: str = field(default="", metadata={"help": "caption column of a Hugging Face --data; empty: "
                                                              "captions, caption or text"})
    seed: int = field(default=0, metadata={"help": "random seed"})
