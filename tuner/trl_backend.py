"""`vrlhf tune --backend trl`: a decoder-only VLM tuned by TRL's RLOO (the paper's leave-one-out REINFORCE) or GRPO,
with our reward mix as TRL reward functions, writing the run directory our own loop writes.

    vrlhf tune --task captioning --policy runs/smolvlm --data work/shapes --out runs/tune-vlm \
        --reward cider_d=1.0 --reward learned:runs/rm=0.5            # RLOO; --baseline group_norm: GRPO

`--backend auto` (the default) picks this for a LLaVA or Idefics3/SmolVLM with a chat template and our loop
(tuner/train.py) for every other policy: encoder-decoder families, which TRL does not take, and PaliGemma, which TRL's
trainers do not run (TRL_FAMILIES). What the flags become:

- `--baseline loo` / `group_norm`: `RLOOTrainer` / `GRPOTrainer` (`greedy` and `none` are our loop's only);
- `--k`: `num_generations`; `--batch_size` (images per step): batch_size · k completions per optimiser step, all
  generated at once (`generation_batch_size`), each rank's share in forward/backward passes of at most
  COMPLETIONS_PER_PASS completions (`per_device_train_batch_size`) and at least `--grad_accum` of them
  (`gradient_accumulation_steps`): see `batch_sizes`;
- `--mixed_precision`: `bf16` / `fp16`; empty: the launcher's (ACCELERATE_MIXED_PRECISION), else fp32;
- `--steps`, `--lr`, `--warmup_steps`, `--weight_decay`, `--max_grad_norm`, `--grad_accum`, `--seed`: the same
  (a constant learning rate after warm-up, as ours);
- `--kl_coef`: `beta` (RLOO folds the KL into the reward as ours does by default; GRPO puts it in the loss, as ours
  with `--kl_in loss`);
- `--reward NAME=W`, `--reward_norm`: one reward function per component, normalised as ours, `reward_weights` = W;
- `--temperature`, `--max_new_tokens`: `temperature` with top-k 0 and top-p 1 (the full distribution),
  `max_completion_length`;
- `--lora_r`, `--lora_alpha`, `--merge_lora`: `peft_config`; final/ merged, or the adapter;
- `--eval_every`, `--num_show`: our greedy held-out evaluation and samples; `--save_every`, `--resume`: TRL's
  checkpoints in checkpoints/.

Reward functions receive TRL's completion token ids and decode them with the task (`Caption.finished`: the completion
ended with a stop id), and the rows they belong to through a `row_index` column: so CIDEr-D, the oracle and learned
reward models score exactly as they do in our loop (on the training device; `--reward_norm batch` whitens over every
rank's completions, and `running` statistics are saved in each checkpoint and restored on resume). Gradient
checkpointing (TRL's default) is on, except on the CPU.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import TrainerCallback

from vrlhf import collectives
from vrlhf.errors import ConfigError

ALGORITHMS = {"loo": "rloo", "group_norm": "grpo"}  # --baseline -> TRL trainer
# Completions per forward/backward pass on one device. A rank's share of a step (32 images × 16 samples = 512 on one
# GPU at the defaults) in one pass would hold 512 sequences' activations; the rest accumulates instead.
COMPLETIONS_PER_PASS = 64
STATS_FILE = "reward_stats.json"  # the running reward statistics in each TRL checkpoint
# The VLM families TRL's trainers run. Not PaliGemma: its processor wants the images with every text TRL tokenises,
# and its forward is called with `labels` TRL's RLOO/GRPO do not take (tracebacks from inside TRL 1.x, with or
# without a chat template); our loop tunes it.
TRL_FAMILIES = ("llava", "idefics3")


def uses_trl(cfg) -> bool:
    """Which backend `cfg` asks for: `--backend trl`, or `auto` and a VLM TRL runs (a family of TRL_FAMILIES with
    a chat template); `auto` sends every other policy to our loop, which runs every family."""
    if cfg.backend not in ("auto", "ours", "trl"):
        raise ConfigError(f"--backend {cfg.backend!r} is not auto, ours or trl")
    if cfg.backend != "auto":
        return cfg.backend == "trl"
    from vrlhf.errors import ModelError
    from vrlhf.families import model_type

    try:
        family = model_type(cfg.policy)
    except ModelError:  # not loadable: our loop reports it, after the data's own checks (bad rows come first)
        return False
    return family in TRL_FAMILIES and has_chat_template(cfg.policy)


def has_chat_template(path) -> bool:
    """Whether the processor saved at `path` has a chat template (a hub id: assumed, and checked once loaded)."""
    import json

    local = Path(path)
    if not local.is_dir():
        return True
    if (local / "chat_template.jinja").is_file() or (local / "chat_template.json").is_file():
        return True
    for name in ("processor_config.json", "tokenizer_config.json"):
        try:
            if json.loads((local / name).read_text()).get("chat_template"):
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def check_trl_config(cfg) -> None:
    """Refuse, naming each flag, what our loop does and TRL does not."""
    problems = []
    if cfg.baseline not in ALGORITHMS:
        problems.append(f"--baseline {cfg.baseline}: the trl backend runs loo (RLOO) or group_norm (GRPO)")
    if cfg.train_on != "all":
        problems.append("--train_on one: TRL trains on every sample")
    if cfg.mle_coef:
        problems.append("--mle_coef: no MLE term in TRL's RLOO/GRPO")
    if cfg.kl_reference:
        problems.append("--kl_reference: TRL anchors the KL to the starting policy")
    if cfg.kl_coef and cfg.kl_in == "loss" and cfg.baseline == "loo":
        problems.append("--kl_in loss: TRL's RLOO folds the KL into the reward (GRPO, --baseline group_norm, puts "
                        "it in the loss)")
    if cfg.k < 2:
        problems.append("--k must be >= 2 (a group of samples per image)")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if (cfg.batch_size * cfg.k) % (world * cfg.grad_accum):
        problems.append(f"batch_size × k = {cfg.batch_size * cfg.k} completions is not divisible by processes × "
                        f"grad_accum = {world} × {cfg.grad_accum}")
    if problems:
        raise ConfigError("--backend trl: " + "; ".join(problems))


def tune_with_trl(cfg, task):
    """Run the tuning described by `cfg` through TRL for `task` (its module); returns (tuned policy, final held-out
    metrics), as `tune`."""
    from tuner.monitor import evaluate, save_samples
    from tuner.rewards import build_reward, parse_reward_specs
    from tuner.run_files import save_final, split_data
    from vrlhf.families import vlm
    from vrlhf.rundir import RunDir

    check_trl_config(cfg)
    if task.SHOWN != "text":
        raise ConfigError(f"--backend trl tunes text outputs (captioning); task {task.NAME!r} outputs are "
                          f"{task.SHOWN}s to people")
    specs = parse_reward_specs(cfg.reward or list(task.DEFAULT_REWARDS))
    train_rows, eval_rows = split_data(cfg, task)
    reward = build_reward(task, specs, train_rows, cfg.reward_norm, training_device())  # learned RMs: on the GPU
    torch.manual_seed(cfg.seed)
    policy = task.load_policy(cfg.policy)
    if policy.adapter is not vlm:
        raise ConfigError(f"--backend trl: {cfg.policy} is a {policy.family} model; TRL tunes decoder-only "
                          f"vision-language models only (use --backend ours for encoder-decoder captioners)")
    if policy.family not in TRL_FAMILIES:
        raise ConfigError(f"--backend trl: {cfg.policy} is a {policy.family} model, which TRL's trainers do not run "
                          f"(they support {', '.join(TRL_FAMILIES)}); tune it with --backend ours (auto's choice)")
    if not getattr(policy.processor, "chat_template", None):
        raise ConfigError(f"--backend trl: {cfg.policy} has no chat template, and TRL needs conversational prompts "
                          f"for images (a {policy.family} model: tune it with --backend ours)")
    if cfg.prompt:
        vlm.set_prompt(policy, cfg.prompt)

    out = Path(cfg.out)
    resume_from = last_checkpoint(out / "checkpoints") if cfg.resume else None
    main = int(os.environ.get("RANK", "0")) == 0
    rundir = RunDir(out, resume_step=checkpoint_step(resume_from), enabled=main, overwrite=cfg.overwrite,
                    resume=cfg.resume)
    rundir.save_config(cfg)
    show_rows = eval_rows[: cfg.num_show]
    max_new_tokens = cfg.max_new_tokens or policy.max_new_tokens

    trainer, clock = build_trainer(cfg, task, policy, reward, train_rows, out)
    stats = RewardStatsCallback(trainer.reward_funcs)
    if resume_from is not None:
        stats.load(resume_from)
    # "before" once the Trainer has put the model on its device (evaluating on the CPU first would take minutes)
    if resume_from is None and main:
        log_eval(rundir, evaluate, task, policy, eval_rows, max_new_tokens, step=0)
        if show_rows:
            save_samples(task, policy, show_rows, out / "samples_before", seed=cfg.seed)
    trainer.accelerator.wait_for_everyone()
    trainer.add_callback(stats)
    trainer.add_callback(RunDirCallback(cfg, task, policy, eval_rows, rundir, clock, max_new_tokens, evaluate))
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    policy.model = trainer.model  # with LoRA: the PEFT model TRL built

    if not main:
        return policy, {}
    final = log_eval(rundir, evaluate, task, policy, eval_rows, max_new_tokens, step=trainer.state.global_step)
    if show_rows:
        save_samples(task, policy, show_rows, out / "samples_after", seed=cfg.seed)
    save_final(cfg, policy, out / "final")
    print(f"done: {trainer.state.global_step} steps of TRL {ALGORITHMS[cfg.baseline].upper()}; final policy in "
          f"{out / 'final'}")
    return policy, final


def build_trainer(cfg, task, policy, reward, train_rows: list[dict], out: Path):
    """TRL's RLOOTrainer or GRPOTrainer over the policy's model and processor, our rewards as reward functions."""
    import datasets

    from vrlhf.families.vlm import messages

    algorithm = ALGORITHMS[cfg.baseline]
    if algorithm == "rloo":
        from trl import RLOOConfig as TrainerConfig
        from trl import RLOOTrainer as Trainer
    else:
        from trl import GRPOConfig as TrainerConfig
        from trl import GRPOTrainer as Trainer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cpu = not torch.cuda.is_available()
    tracker = {"auto": "tensorboard" if _installed("tensorboard") else "none", "": "none"}.get(cfg.log_with,
                                                                                               cfg.log_with)
    args = TrainerConfig(
        output_dir=str(out / "checkpoints"), max_steps=cfg.steps, seed=cfg.seed, data_seed=cfg.seed,
        num_generations=cfg.k, **batch_sizes(cfg, world), learning_rate=cfg.lr,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm or 0.0,
        beta=cfg.kl_coef, temperature=cfg.temperature, top_k=0, top_p=1.0,
        generation_kwargs={"suppress_tokens": list(policy.banned_token_ids)} if policy.banned_token_ids else None,
        max_completion_length=cfg.max_new_tokens or policy.max_new_tokens,
        reward_weights=list(reward.weights.values()), disable_dropout=True, remove_unused_columns=False,
        **precision_args(cfg.mixed_precision, cpu), use_cpu=cpu, logging_steps=1, report_to=tracker,
        save_strategy="steps" if cfg.save_every else "no",
        save_steps=cfg.save_every or 500, save_total_limit=2, dataloader_num_workers=0,
    )
    prompt = messages(policy.meta["prompt"])
    dataset = datasets.Dataset.from_dict(
        {"prompt": [prompt] * len(train_rows), "image": [row["image"] for row in train_rows],
         "row_index": list(range(len(train_rows)))},
        features=datasets.Features({"prompt": [{"role": datasets.Value("string"), "content": [
            {"type": datasets.Value("string"), "text": datasets.Value("string")}]}],
            "image": datasets.Image(), "row_index": datasets.Value("int64")}))
    clock = Clock()
    peft_config = None
    if cfg.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                 target_modules="all-linear")
    trainer = None

    def gather(values):  # every rank scores its share of each generation batch in step: a safe collective
        return collectives.gather(trainer.accelerator, values)

    funcs = reward_functions(task, policy, reward, train_rows, clock, gather)
    trainer = Trainer(model=policy.model, reward_funcs=funcs, args=args, train_dataset=dataset,
                      processing_class=policy.processor, peft_config=peft_config)
    clock.instrument(trainer)
    return trainer, clock


def batch_sizes(cfg, world: int) -> dict:
    """TRL's batch arguments: a rank's share of a step's batch_size · k completions, in passes of at most
    COMPLETIONS_PER_PASS (the largest divisor of the share that fits, and at least --grad_accum passes); the whole
    share is generated at once (TRL's default: one generation batch per optimiser step, as our loop samples)."""
    share = cfg.batch_size * cfg.k // world  # completions per rank per optimiser step
    limit = min(COMPLETIONS_PER_PASS, share // cfg.grad_accum)
    per_pass = max(d for d in range(1, max(1, limit) + 1) if share % d == 0)
    return {"per_device_train_batch_size": per_pass, "gradient_accumulation_steps": share // per_pass}


def precision_args(flag: str, cpu: bool) -> dict:
    """TrainingArguments' bf16 / fp16 from --mixed_precision, else the launcher's; gradient checkpointing (TRL's
    default) on a GPU, where activations are the memory that matters, off on the CPU, where it only costs time."""
    from vrlhf.training import launcher_mixed_precision

    precision = launcher_mixed_precision(flag)
    if precision == "fp16" and cpu:
        raise ConfigError("--mixed_precision fp16 needs a GPU (no fp16 gradient scaling on the CPU): use bf16 or no")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "activation_checkpointing": not cpu}


def training_device() -> torch.device:
    """The device this process trains on (the Trainer's: the local rank's GPU, else the CPU)."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def reward_functions(task, policy, reward, train_rows: list[dict], clock, gather=lambda t: t) -> list:
    """One TRL reward function per component of our RewardMix, each normalised as `--reward_norm` says (`gather`:
    over every rank's completions); the raw component means go to the log as `reward/NAME`. Each function's mix is
    its `.mix` (running statistics: RewardStatsCallback)."""
    from tuner.rewards import RewardMix

    def make(name: str):
        single = RewardMix({name: reward.fns[name]}, {name: 1.0}, reward.normalize, device=reward.device)

        def score(prompts, completions, completion_ids, row_index, log_metric=None, **_):
            with clock("reward"):
                rows, k = grouped([train_rows[i] for i in row_index], row_index)
                outputs = task.decode(policy, rows, padded(completion_ids, policy.pad_token_id), k)
                total, raw = single(rows, outputs, gather=gather)
                if log_metric is not None:
                    log_metric(f"reward/{name}", raw[name].mean().item())
                return total.tolist()

        score.__name__ = name  # TRL logs rewards/<name>/mean
        score.mix = single
        return score

    return [make(name) for name in reward.fns]


def grouped(rows: list[dict], row_index: list[int]) -> tuple[list[dict], int]:
    """TRL repeats each prompt k times in a row: (one row per group, k) when it did, else (every row, 1)."""
    counts = [len(list(group)) for _, group in itertools.groupby(row_index)]
    k = counts[0]
    if all(c == k for c in counts):
        return rows[::k], k
    return rows, 1


def padded(sequences: list[list[int]], pad: int) -> torch.Tensor:
    length = max(1, max(len(s) for s in sequences))
    return torch.tensor([list(s) + [pad] * (length - len(s)) for s in sequences], dtype=torch.long)


class Clock:
    """Seconds per phase of each step: sample (generate), reward, forward_backward (loss + backward); the rest of a
    step (tokenising, image processing, the no-grad log-prob pass RLOO makes for its ratio, the optimiser step) is
    `other`."""

    def __init__(self):
        self.totals, self.inside = defaultdict(float), None
        self.mark = time.perf_counter()

    @contextmanager
    def __call__(self, name: str):
        if self.inside is not None:  # a phase inside another counts for the outer one
            yield
            return
        self.inside, start = name, time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] += time.perf_counter() - start
            self.inside = None

    def wrap(self, obj, method: str, name: str) -> None:
        original = getattr(obj, method)

        def timed(*args, **kwargs):
            with self(name):
                return original(*args, **kwargs)

        setattr(obj, method, timed)

    def instrument(self, trainer) -> None:
        self.wrap(trainer.model, "generate", "sample")
        self.wrap(trainer, "compute_loss", "forward_backward")
        self.wrap(trainer.accelerator, "backward", "forward_backward")

    def step(self) -> dict[str, float]:
        """The step's timings since the last call."""
        now = time.perf_counter()
        record = {f"time/{name}": seconds for name, seconds in self.totals.items()}
        record["time/step"] = now - self.mark
        record["time/other"] = record["time/step"] - sum(self.totals.values())
        self.totals.clear()
        self.mark = now
        return record


class RewardStatsCallback(TrainerCallback):
    """The running reward statistics (`--reward_norm running`) saved into each TRL checkpoint (STATS_FILE) and read
    back on resume: a resumed run normalises as the uninterrupted one would."""

    def __init__(self, reward_funcs):
        self.mixes = [f.mix for f in reward_funcs if hasattr(f, "mix")]

    def state_dict(self) -> dict:
        return {name: stats for mix in self.mixes for name, stats in mix.state_dict().items()}

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:  # the statistics are of gathered values: the same on every rank
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            (folder / STATS_FILE).write_text(json.dumps(self.state_dict()))

    def load(self, checkpoint: Path) -> None:
        path = Path(checkpoint) / STATS_FILE
        if not path.is_file():  # a checkpoint of an older version: statistics start afresh
            print(f"note: {path} is missing: running reward statistics start afresh")
            return
        state = json.loads(path.read_text())
        for mix in self.mixes:
            mix.load_state_dict({name: state[name] for name in mix.fns if name in state})


class RunDirCallback(TrainerCallback):
    """TRL's per-step logs into our metrics.jsonl (names as our loop writes them), held-out evaluation every
    `eval_every` steps, progress.json."""

    RENAME = {"reward": "reward", "loss": "loss", "grad_norm": "grad_norm", "learning_rate": "lr", "kl": "kl",
              "entropy": "entropy", "completions/mean_length": "tokens_per_seq"}

    def __init__(self, cfg, task, policy, eval_rows, rundir, clock, max_new_tokens, evaluate):
        self.cfg, self.task, self.policy, self.eval_rows, self.rundir = cfg, task, policy, eval_rows, rundir
        self.clock, self.max_new_tokens, self.evaluate = clock, max_new_tokens, evaluate
        self.timings = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.clock.step()  # start the first step's clock here

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.timings = self.clock.step()
        self.rundir.progress(state.global_step, self.cfg.steps)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:  # the end-of-training summary
            return
        record = {ours: logs[theirs] for theirs, ours in self.RENAME.items() if logs.get(theirs) is not None}
        record |= {k: v for k, v in logs.items() if k.startswith("reward/") and v is not None}
        if logs.get("completions/clipped_ratio") is not None:
            record["eos_frac"] = 1.0 - logs["completions/clipped_ratio"]
        record |= {f"trl/{k}": v for k, v in logs.items()
                   if k not in self.RENAME and not k.startswith("reward/") and isinstance(v, (int, float))}
        self.rundir.log({"step": state.global_step, **record, **self.timings})
        step = state.global_step
        due = self.cfg.eval_every and step % self.cfg.eval_every == 0 and step < self.cfg.steps
        if due and args.process_index == 0:
            log_eval(self.rundir, self.evaluate, self.task, self.policy, self.eval_rows, self.max_new_tokens, step,
                     model=kwargs.get("model"))
            self.clock.step()  # evaluation is not part of the next step


def log_eval(rundir, evaluate, task, policy, rows, max_new_tokens, step: int, model=None) -> dict:
    """Greedy held-out metrics as `eval/NAME` lines of metrics.jsonl (dropout off while evaluating)."""
    if not rows:
        return {}
    if model is not None:
        policy.model = model
    was_training, start = policy.model.training, time.perf_counter()
    policy.model.eval()
    metrics = evaluate(task, policy, rows, max_new_tokens=max_new_tokens)
    policy.model.train(was_training)
    rundir.log({"step": step, **{f"eval/{k}": v for k, v in metrics.items()}, "time/eval": time.perf_counter() - start})
    return metrics


def last_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    found = get_last_checkpoint(str(folder))
    return Path(found) if found else None


def checkpoint_step(checkpoint: Path | None) -> int:
    if checkpoint is None:
        return 0
    import json

    return int(json.loads((checkpoint / "trainer_state.json").read_text())["global_step"])


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
