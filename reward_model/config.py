"""The configs of the reward model and of `vrlhf train-reward` / `eval-reward`, in a module that imports no torch:
the CLI checks those commands' flags with them before torch and transformers load (seconds)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

MINILM = "minilm"  # name of the bundled sentence encoder in configs
LORA_TARGETS = ["query", "value", "q_proj", "v_proj"]  # attention projections of BERT/ViT (v4 and v5) and CLIP


@dataclass
class RewardModelConfig:
    """Architecture of a reward model; `build_reward_model` fills the backbone config dicts."""

    task: str = field(metadata={"help": "the task's NAME (a module of vrlhf/tasks, or a dotted import path)"})
    image_encoder: str = field(default="", metadata={
        "help": "a Hugging Face vision model (directory or hub id) or an image-to-sequence policy directory (its "
                "vision encoder, e.g. data/demo/captioner); empty: the tiny encoder of --encoder, from scratch"})
    text_encoder: str = field(default=MINILM, metadata={"help": "'minilm' (bundled) or an HF text "
                                                                          "encoder directory (captioning)"})
    clip: str = field(default="", metadata={"help": "a CLIPModel directory used for both image and text"})
    encoder: str = field(default="cnn", metadata={"help": "default image encoder when no --image_encoder: "
                                                          "cnn (tiny ResNet) | vit (tiny ViT)"})
    image_size: int = field(default=48, metadata={"help": "images are resized to this square size"})
    patch_size: int = field(default=6, metadata={"help": "patch size of the default tiny ViT"})
    vit_hidden: int = field(default=96, metadata={"help": "width of the tiny ViT (the CNN's stages: "
                                                                  "w, 2w, 4w with w = vit_hidden // 3)"})
    vit_layers: int = field(default=3, metadata={"help": "depth of the default tiny ViT"})
    hidden_size: int = field(default=256, metadata={"help": "width of the projections and the MLP head"})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on the backbones; 0: no LoRA"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout inside the LoRA adapters"})
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS),
                                    metadata={"help": "linear layer names that get adapters"})
    train_text_encoder: bool = field(default=False, metadata={"help": "fine-tune the whole text encoder "
                                                                      "(default: frozen, embeddings cached)"})
    dense: bool = field(default=False, metadata={"help": "dense reward: image outputs get a score map over a "
                                                         "map_grid x map_grid raster of cells (the score is its mean), "
                                                         "captions a score per word (the score is their sum); marks "
                                                         "train them where they were made"})
    map_grid: int = field(default=8, metadata={"help": "cells per side of an image output's score map (dense): the "
                                                       "colorizer's colour grid, one cell per token"})
    reads: str = field(default="render", metadata={
        "help": "what the model reads of an output: 'render' (what people see) | 'view' (the task's model_view where "
                "it has one, e.g. detection's boxes at the input's own resolution: faster, ranks better, tunes worse: "
                "docs/DEMO.md; else what people see) | 'boxes' (box outputs themselves: one value per box and one "
                "for the set, reward_model/box_set_model.py)"})
    # Filled in by build_reward_model; a saved model rebuilds its backbones from these. Not command-line flags.
    vision_config: dict = field(default_factory=dict, metadata={"help": "HF config dict of the image encoder",
                                                                "flag": False})
    text_config: dict = field(default_factory=dict, metadata={"help": "HF config dict of the text encoder",
                                                              "flag": False})
    image_channels: int = field(default=3, metadata={"help": "input channels of the image encoder", "flag": False})
    image_mean: list[float] = field(default_factory=lambda: [0.5], metadata={"help": "pixel normalisation mean",
                                                                             "flag": False})
    image_std: list[float] = field(default_factory=lambda: [0.5], metadata={"help": "pixel normalisation std",
                                                                            "flag": False})

    @classmethod
    def of(cls, settings) -> RewardModelConfig:
        """The reward-model fields of any config that has them (e.g. a TrainRewardConfig, which inherits them)."""
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})


@dataclass
class TrainRewardConfig(RewardModelConfig):
    """`vrlhf train-reward`: the reward model's fields (inherited from RewardModelConfig), then the training run's."""

    task: str = field(default="", metadata={"help": "task of the pairs (a vrlhf.tasks module, or a dotted import "
                                                    "path); empty: the export's only task"})
    image_encoder: str = field(default="default", metadata={
        "help": "a Hugging Face vision model (directory or hub id) or an image-to-sequence policy directory (its "
                "vision encoder); 'default': the task's REWARD_IMAGE_ENCODER (captioning: the demo captioner's ViT, "
                "data/demo/captioner; colorization: ''); empty: the tiny encoder of --encoder (cnn | vit), from "
                "scratch"})
    reads: str = field(default="auto", metadata={
        "help": "what the model reads of an output: render | view | boxes (above); auto: the task's REWARD_READS "
                "(detection: boxes, measured in docs/DEMO.md), else render"})
    data: str = field(default="", metadata={"help": "preference export: saved HF dataset dir, .jsonl or .parquet"})
    out: str = field(default="", metadata={"help": "output directory for the best reward model and metrics.jsonl"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace the run --out already holds (without it an earlier run is refused)"})
    # optimisation
    epochs: int = field(default=10, metadata={"help": "passes over the training pairs"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many steps (0: run all epochs)"})
    batch_size: int = field(default=32, metadata={"help": "pairs per step per process"})
    lr: float = field(default=5e-4, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "linear warm-up share of the steps, then "
                                                                "cosine decay"})
    margin: float = field(default=0.0, metadata={"help": "Bradley–Terry margin on strict preferences"})
    center_rewards_coefficient: float = field(default=0.0, metadata={"help": "TRL's reward centring: "
                                                                              "+ coef·mean((r_c + r_r)^2)"})
    augment: str = field(default="auto", metadata={"help": "flips: each epoch turns every pair's input and both "
                                                           "outputs by the same random flip or quarter turn (only "
                                                           "for tasks whose preferences survive it: colorization, "
                                                           "not captioning); none; auto: flips where they may"})
    marks_coef: float = field(default=1.0, metadata={
        "help": "dense models and --reads boxes, exports with marks: weight of the term that asks every marked "
                "region (cell, word, box) to score below the unmarked ones of the same output (reward_model/losses.py "
                "marks_loss; 0: off)"})
    contrastive_coef: float = field(default=1.0, metadata={
        "help": "weight of an in-batch term where each input's chosen output must outscore outputs made for other "
                "inputs: captions, every other image's chosen caption; images, another pair's chosen colours carried "
                "onto this input (the task's transplant) (0: off)"})
    # evaluation and run
    eval_fraction: float = field(default=0.1, metadata={"help": "share of input images held out"})
    eval_every: int = field(default=50, metadata={"help": "evaluate (and maybe checkpoint) every N steps"})
    seed: int = field(default=0, metadata={"help": "seed of the split, initialisation and shuffling"})
    mixed_precision: str = field(default="", metadata={
        "help": "no | bf16 | fp16; empty: the launcher's (accelerate launch --mixed_precision, else no)"})
    progress: bool = field(default=True, metadata={"help": "show a tqdm progress bar"})
    num_workers: int = field(default=-1, metadata={
        "help": "DataLoader processes that decode and preprocess the pairs beside training; -1: 4 when training on a "
                "GPU (which would otherwise wait for the main thread to decode images), 0 on a CPU (workers would "
                "take its cores)"})


@dataclass
class EvalRewardConfig:
    model: str = field(default="", metadata={"help": "reward model directory (from vrlhf train-reward)"})
    data: str = field(default="", metadata={"help": "preference export: saved HF dataset dir, .jsonl or .parquet"})
    batch_size: int = field(default=64, metadata={"help": "pairs per forward pass"})
    json: bool = field(default=False, metadata={"help": "print one JSON object instead of a table"})
