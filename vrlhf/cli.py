"""The `vrlhf` console script: each subcommand is a `main(argv)` function, imported only when used.

A command's flags are checked before its module is imported where its config dataclass lives in a module that
imports no torch, transformers or Gradio (`LIGHT_CONFIGS`): `--help` and a mistyped flag answer in a fraction of
a second instead of after the seconds those imports take.
"""

from __future__ import annotations

import importlib
import os
import sys

# Hub access is the user's choice: `--policy owner/name` downloads unless HF_HUB_OFFLINE=1 is set (the Makefile, the
# tests and the demo set it; the demo's models and data are all local).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# our padding after EOS is masked, so HF's padding advice is noise; read when (and if) transformers is imported
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
OFFLINE_COMMANDS = {"demo"}

# command -> its config dataclass, in a module light to import: the flags are parsed with it before the command's
# own module (torch, transformers, Gradio: seconds) is imported; the command parses them again, the same way
LIGHT_CONFIGS = {
    "pretrain": "vrlhf.pretrain_config:PretrainConfig",
    "tune": "tuner.config:TuneConfig",
    "eval": "tuner.evaluate:EvalConfig",
    "sample": "labeler.sampling:SampleConfig",
    "export": "labeler.export:ExportConfig",
    "demo": "loop.demo:DemoConfig",
    "dpo": "tuner.dpo:DPOTuneConfig",
    "train-reward": "reward_model.config:TrainRewardConfig",
    "eval-reward": "reward_model.config:EvalRewardConfig",
}

COMMANDS = {
    "data": ("vrlhf.shapes:main", "generate the embedded shapes dataset: vrlhf data shapes --n N --out DIR"),
    "pretrain": ("vrlhf.pretrain:main", "MLE pretraining of a captioning or colorization policy"),
    "eval": ("tuner.evaluate:main", "held-out metrics of a policy: greedy, and best-of-n under a reward (--best_of N)"),
    "sample": ("labeler.sampling:main", "draw k candidates per input into the preference store"),
    "label": ("labeler.cli:main", "serve the Gradio labeling app"),
    "annotators": ("labeler.users:main", "manage annotator logins: vrlhf annotators add NAME"),
    "export": ("labeler.export:main", "export preference pairs (hf | jsonl | parquet | trl)"),
    "train-reward": ("reward_model.train:main", "Bradley-Terry reward model training on an export"),
    "eval-reward": ("reward_model.evaluate:main", "reward model accuracy, margin and calibration on an export"),
    "tune": ("tuner.train:main", "REINFORCE tuning against metric and learned rewards (VLMs: TRL's RLOO or GRPO)"),
    "dpo": ("tuner.dpo:main", "DPO of a vision-language model directly on exported preference pairs (TRL)"),
    "demo": ("loop.demo:main", "the loop on the embedded default: the labeling app, or --simulate rounds headless"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: vrlhf <command> [options]   (vrlhf <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"vrlhf: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if name in OFFLINE_COMMANDS:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vrlhf.errors import run_command

    prog = f"vrlhf {name}"
    if name in LIGHT_CONFIGS and run_command(prog, lambda argv: check_flags(name, prog, argv), rest):
        return 2
    # a problem the user can fix (a VrlhfError) is one line naming the file, row or flag, no traceback
    return run_command(prog, lambda argv: load(COMMANDS[name][0])(argv), rest)


def load(target: str):
    """`"module:name"` -> the object, importing the module."""
    module_name, attribute = target.split(":")
    return getattr(importlib.import_module(module_name), attribute)


def check_flags(name: str, prog: str, argv: list[str]) -> int:
    """Parse `argv` with the command's light config class: --help exits here, a bad flag raises ConfigError."""
    from vrlhf.config import parse_config

    parse_config(load(LIGHT_CONFIGS[name]), list(argv), prog=prog)
    return 0


if __name__ == "__main__":
    sys.exit(main())
