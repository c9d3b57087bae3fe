"""The flags that the training commands share, each defined once: `RunConfig` (`vrlhf pretrain`, `tune`, `dpo`) and
`PolicyRunConfig` (`tune`, `dpo`: they start from a policy). A command whose default differs, or for which a flag
means something else, redefines that field with `override` (same flag and type, its own default or help line).

Imports no torch: `vrlhf.cli.LIGHT_CONFIGS` checks a command's flags with its config before the heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vrlhf.tasks import DEFAULT_TASK


def override(cls, name: str, default, help: str | None = None):
    """The field `name` of the dataclass `cls` with this command's default (and help line, where the flag means
    something else for the command)."""
    inherited = cls.__dataclass_fields__[name]
    return field(default=default, metadata={**inherited.metadata, **({"help": help} if help else {})})


@dataclass
class RunConfig:
    """What every training command is given: the task, the data, the run directory, the optimiser's basics, the
    precision and the seed. The defaults are `vrlhf tune`'s."""

    task: str = field(default=DEFAULT_TASK, metadata={
        "help": "task: a module of vrlhf/tasks (captioning | colorization | detection) or a module's dotted path"})
    data: str = field(default="", metadata={
        "help": "DIR with train/ and test/ (as `vrlhf data shapes` writes), or one folder vrlhf.data.load_rows reads"})
    out: str = field(default="runs/tune", metadata={
        "help": "run directory: config, metrics.jsonl, checkpoints, final/"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace the run --out already holds (without it an earlier run is refused; `vrlhf tune --resume` "
                "continues it)"})
    image_column: str = field(default="image", metadata={
        "help": "image column of a Hugging Face dataset of rows (saved, or a hub id)"})
    caption_column: str = field(default="", metadata={
        "help": "caption column of a Hugging Face dataset of rows (a string or a list of strings); empty: captions, "
                "caption or text"})
    steps: int = field(default=60, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=32, metadata={
        "help": "images per optimiser step, over all processes and accumulation steps"})
    lr: float = field(default=5e-5, metadata={"help": "AdamW learning rate (constant after warm-up)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    mixed_precision: str = field(default="", metadata={
        "help": "no | bf16 | fp16; empty: the launcher's (accelerate launch --mixed_precision, else no)"})
    seed: int = field(default=0, metadata={
        "help": "random seed: the training data's order, the samples, a fresh model's weights"})


@dataclass
class PolicyRunConfig(RunConfig):
    """What the commands that tune a policy add: the policy and its prompt, held-out rows, the optimiser's
    schedule, LoRA, checkpoints and trackers."""

    policy: str = field(default="", metadata={
        "help": "starting policy: a directory (ours, or any supported Hugging Face captioner / VLM) or a hub id"})
    prompt: str = field(default="", metadata={
        "help": "a VLM's question about each image; empty: the policy's own (policy.json), else 'Describe the image.'"})
    eval_data: str = field(default="", metadata={"help": "held-out rows; empty: DATA/test, or else the rows of "
                                                         "--data that test_fraction holds out"})
    eval_size: int = field(default=200, metadata={"help": "number of held-out rows evaluated (greedy decoding)"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimiser step on each process"})
    warmup_steps: int = field(default=5, metadata={"help": "linear learning-rate warm-up steps"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping; 0: off"})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on all linear layers (PEFT); 0: tune every weight"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    merge_lora: bool = field(default=True, metadata={
        "help": "merge LoRA into the weights when saving final/ (else save the adapter)"})
    save_every: int = field(default=20, metadata={
        "help": "checkpoint (model, optimiser, scheduler, RNG) every N steps; 0: off"})
    log_with: str = field(default="auto", metadata={
        "help": "trackers: auto (TensorBoard when installed) | tensorboard | wandb | none"})
