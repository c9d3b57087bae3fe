"""The prepared GPU check (issue #23): everything a GPU can break that a CPU run cannot show, in one table.

    bash scripts/gpu_check.sh                      # on a machine with NVIDIA GPUs: sets up Python, ≤ 8 minutes
    python scripts/gpu_check.py --cpu --smoke      # the same steps, tiny, on the CPU (tests/test_gpu_check_smoke.py)

Everything is built from configs (nothing git-ignored, no download): the shapes data, a simulated caption preference
export, a ViT-B/16 + GPT2-small-shaped captioner (random weights, GPT2's 50257-token vocabulary), tiny LLaVA and
PaliGemma checkpoints. The steps, each in a fresh process (a failure is one line and the rest still run):

  demo bf16 / vitb bf16   `vrlhf tune` with --reward_norm batch --kl_coef 0.1 --save_every 1, then --resume for one
                          more step (the resumed run must log it)
  demo fp16               the demo captioner once in fp16 (GradScaler)
  ... ×2                  demo and ViT-B again under `accelerate launch --num_processes 2 --mixed_precision bf16`,
                          when there are two GPUs or more (or --processes 2)
  llava / paligemma       sample and log_prob on the device: their agreement, and a gradient through both
  grpo / dpo              one TRL GRPO step and one DPO step on the tiny LLaVA
  reward model            `vrlhf train-reward` for one epoch on the export

Columns: samples (or pairs) per second; the step's time shares from metrics.jsonl (`time/sample`, `time/reward`,
`time/forward_backward`, `time/other` over `time/step`, steps after the first); the KL logged by the first step (the
policy against its identical anchor: should be ~0); peak GPU memory (torch.cuda.max_memory_allocated, the largest
of the processes; on the CPU: peak RSS); and ok or the failure, in one line. Exit code 1 when any step failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout itself, installed or not
STEPS = ("demo", "vitb", "fp16", "multi", "llava", "paligemma", "grpo", "dpo", "rm")  # --only takes these
BUDGET_S = 7 * 60  # steps not started by then are skipped; none runs past it by more than a minute: ≤ 8 minutes


@dataclass
class Sizes:
    """What differs between the GPU check and its CPU smoke run."""

    shapes: int  # shapes rows (a tenth held out)
    batch: int  # images per tuning step (all processes)
    k: int  # samples per image
    steps: int  # tuning steps before the resume (which adds one)
    eval_size: int  # held-out rows evaluated at the start and the end
    vitb: dict  # captioning.build_policy sizes of the "ViT-B/16 + GPT2-small" captioner
    vocab: int  # its vocabulary (GPT2's), the shapes tokenizer padded up to it
    pairs: int  # preference pairs of the export (reward model, DPO)
    timeout: int  # seconds per step


GPU = Sizes(shapes=640, batch=32, k=16, steps=3, eval_size=16, vocab=50257, pairs=128, timeout=240,
            vitb=dict(image_size=224, patch_size=16, hidden_size=768, encoder_layers=12, decoder_layers=12, heads=12,
                      max_new_tokens=28))
SMOKE = Sizes(shapes=40, batch=4, k=2, steps=2, eval_size=4, vocab=300, pairs=12, timeout=180,
              vitb=dict(image_size=32, patch_size=16, hidden_size=32, encoder_layers=1, decoder_layers=1, heads=2,
                        max_new_tokens=8))


# ---- what runs inside each step's process ----------------------------------------------------------------------


def child(kind: str, result: Path, argv: list[str]) -> None:
    """Run one step in this process and write {"peak_mb", ...} to `result`.RANK (each process of a launch its own)."""
    import resource

    import torch

    extra = {}
    try:
        if kind == "tune":
            from tuner.train import main

            main(argv)
        elif kind == "dpo":
            from tuner.dpo import main

            main(argv)
        elif kind == "train-reward":
            from reward_model.train import TrainRewardConfig, train_reward
            from vrlhf.config import parse_config

            extra = {"pairs_per_s": train_reward(parse_config(TrainRewardConfig, argv))["pairs_per_sec"]}
        elif kind == "vlm":  # k, then one model directory per family: one process (one import) for them all
            extra = {"vlms": {Path(path).name: vlm_check(Path(path), int(argv[0])) for path in argv[1:]}}
        else:
            raise ValueError(f"unknown step kind {kind!r}")
    finally:
        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else \
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        rank = os.environ.get("RANK", "0")
        Path(f"{result}.{rank}").write_text(json.dumps({"peak_mb": peak / 2**20, **extra}))


def vlm_check(model_dir: Path, k: int) -> dict:
    """A VLM on this process's device: k samples per image, teacher forcing of them (fp32 and bf16 autocast), a
    backward pass. Returns samples/s and the largest |sampled − teacher-forced| log-prob."""
    import torch
    from PIL import Image

    from vrlhf.device import on_default_device
    from vrlhf.tasks import get_task

    task = get_task("captioning")
    policy = on_default_device(task.load_policy(model_dir))
    pixels = task.pixel_values(policy, [Image.new("RGB", (40, 30), c) for c in ("red", "blue", "green", "gray")])
    generator = torch.Generator(device=policy.device).manual_seed(0)
    gap = 0.0
    for dtype in (None, torch.bfloat16):
        autocast = torch.autocast(policy.device.type, dtype=dtype) if dtype else torch.autocast("cpu", enabled=False)
        with autocast:
            start = time.perf_counter()
            s = policy.sample(pixels, k=k, max_new_tokens=8, generator=generator)
            seconds = time.perf_counter() - start
            log_probs = policy.log_prob(pixels, s.tokens, s.mask, k=k)
        if dtype is None:  # bf16 rounds differently in the two passes (issue #23 row 8); fp32 must agree
            gap = float((log_probs - s.log_probs).abs().max())
        log_probs.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in policy.model.parameters() if p.grad is not None)
    if gap > 1e-3:
        raise AssertionError(f"sampled and teacher-forced log-probs differ by {gap:.2e}")
    return {"samples_per_s": s.tokens.shape[0] / seconds, "gap": gap}


# ---- the driver ------------------------------------------------------------------------------------------------


@dataclass
class Row:
    step: str
    samples_per_s: float | None = None
    shares: tuple | None = None  # (sample, reward, forward_backward, other) of the step time
    kl0: float | None = None
    peak_mb: float | None = None
    status: str = "ok"


class Check:
    def __init__(self, args):
        self.args, self.sizes = args, SMOKE if args.smoke else GPU
        if args.step_timeout:
            self.sizes = dataclasses.replace(self.sizes, timeout=args.step_timeout)
        self.work = Path(args.work).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.rows: list[Row] = []
        self.start = time.monotonic()
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        if args.cpu:
            self.env["CUDA_VISIBLE_DEVICES"] = ""
        self.port = 29600

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.start:5.0f}s] {message}", flush=True)

    # -- running a step --

    def run(self, name: str, kind: str, argv: list[str], processes: int = 1, launcher: list[str] = ()) -> dict | None:
        """Run one step's process(es); None on failure (its last line recorded as the row's status)."""
        if time.monotonic() - self.start > self.args.budget:
            self.rows.append(Row(name, status=f"skipped: the {self.args.budget} s budget is spent"))
            return None
        result, log = self.work / f"{slug(name)}.result", self.work / f"{slug(name)}.log"
        for old in self.work.glob(f"{result.name}.*"):
            old.unlink()
        me = [str(Path(__file__).resolve()), "--child", kind, "--result", str(result), "--"]
        if processes > 1:
            self.port += 1
            command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
                       "--num_machines", "1", "--main_process_port", str(self.port),
                       "--cpu" if self.args.cpu else "--multi_gpu", *launcher, *me, *argv]
        else:
            command = [sys.executable, *me, *argv]
        self.say(f"{name}: {' '.join(command[1:])}")
        timeout = max(30, min(self.sizes.timeout, self.args.budget + 60 - (time.monotonic() - self.start)))
        with open(log, "w") as out:
            try:
                code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=REPO,
                                      timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                code = f"timed out after {timeout:.0f} s"
        results = [json.loads(p.read_text()) for p in sorted(self.work.glob(f"{result.name}.*"))]
        if code != 0 or not results:
            self.rows.append(Row(name, peak_mb=max((r["peak_mb"] for r in results), default=None),
                                 status=f"FAIL ({code}): {last_line(log)}"))
            return None
        return {"peak_mb": max(r["peak_mb"] for r in results), **results[0]}

    def tune(self, name: str, policy: Path, precision: str, processes: int = 1, resume: bool = True,
             extra: list[str] = ()) -> None:
        """`vrlhf tune` for `steps` steps (then --resume for one more); one row from its metrics.jsonl."""
        s, out = self.sizes, self.work / slug(name)
        argv = ["--task", "captioning", "--policy", str(policy), "--data", str(self.work / "shapes"), "--out",
                str(out), "--batch_size", str(s.batch), "--k", str(s.k), "--steps", str(s.steps), "--reward_norm",
                "batch", "--kl_coef", "0.1", "--save_every", "1", "--eval_every", "0", "--eval_size",
                str(s.eval_size), "--num_show", "0", "--log_with", "none", "--warmup_steps", "0", *extra]
        # one process: the precision as a flag; a launch: the launcher's (which the tuner must honour)
        flag = ["--mixed_precision", precision] if processes == 1 else []
        launcher = ["--mixed_precision", precision] if processes > 1 else []
        first = self.run(name, "tune", argv + flag, processes, launcher)
        if first is None:
            return
        row = row_from_metrics(name, out / "metrics.jsonl", s.batch * s.k, first["peak_mb"])
        if resume:
            argv[argv.index("--steps") + 1] = str(s.steps + 1)
            again = self.run(f"{name} (resume)", "tune", argv + flag + ["--resume"], processes, launcher)
            if again is None:
                row.status = self.rows.pop().status.replace("FAIL", "resume FAIL", 1)
            elif s.steps + 1 not in metric_steps(out / "metrics.jsonl") or "resumed from" not in (
                    self.work / f"{slug(name + ' (resume)')}.log").read_text():
                row.status = f"resume FAIL: no step {s.steps + 1} after resuming from step {s.steps}"
            else:
                row.peak_mb = max(row.peak_mb or 0, again["peak_mb"])
                row.status = "ok, resumed"
        self.rows.append(row)

    # -- the steps --

    def prepare(self) -> dict[str, Path]:
        """Data, export and models, built from configs (what the tests build, bigger)."""
        from reward_model.simulate import save_export, simulated_pairs
        from vrlhf.models import tiny_checkpoint
        from vrlhf.shapes import make_shapes, write_imagefolder
        from vrlhf.tasks import get_task

        s = self.sizes
        rows = make_shapes(s.shapes, seed=0)
        held = max(2, s.shapes // 10)
        write_imagefolder(rows[:-held], self.work / "shapes" / "train")
        write_imagefolder(rows[-held:], self.work / "shapes" / "test")
        save_export(simulated_pairs(get_task("captioning"), s.pairs, seed=1), self.work / "export")
        task = get_task("captioning")
        captions = [c for r in rows for c in r["captions"]]
        policy = task.build_policy(task.build_tokenizer(captions), **s.vitb)
        # GPT2's vocabulary: its output layer and logits are GPT2-small's (the tokenizer knows only the shapes' words)
        policy.model.decoder.resize_token_embeddings(s.vocab, mean_resizing=False)
        policy.save(self.work / "vitb-gpt2")
        for family in ("llava", "paligemma"):
            tiny_checkpoint(family, self.work / family, texts=captions, image_size=16 if self.args.smoke else 32)
        return {"demo": REPO / "data" / "demo" / "captioner", "vitb": self.work / "vitb-gpt2",
                "llava": self.work / "llava", "paligemma": self.work / "paligemma"}

    def all(self, processes: int) -> None:
        s, only = self.sizes, set(self.args.only.split(",")) if self.args.only else set(STEPS)
        # bf16 and fp16 as asked on a GPU; the CPU smoke run keeps fp32 for the tuning rows (bf16 matmuls are emulated
        # on most CPUs: minutes instead of seconds) and runs fp16 once, for the GradScaler's path
        bf16 = "no" if self.args.cpu else "bf16"
        bf16_flag = [] if self.args.cpu else ["--mixed_precision", "bf16"]
        self.say(f"preparing data and models in {self.work}")
        try:
            models = self.prepare()
        except Exception as error:  # nothing else can run
            self.rows.append(Row("prepare", status=f"FAIL: {type(error).__name__}: {one_line(error)}"))
            return
        if "demo" in only:
            self.tune(f"demo {bf16}", models["demo"], bf16)
        if "vitb" in only:
            self.tune(f"vitb-gpt2 {bf16}", models["vitb"], bf16)
        if "fp16" in only:
            self.tune("demo fp16", models["demo"], "fp16", resume=False)
        if "multi" in only and processes > 1:
            self.tune(f"demo {bf16} x{processes}", models["demo"], bf16, processes)
            self.tune(f"vitb-gpt2 {bf16} x{processes}", models["vitb"], bf16, processes)
        families = [family for family in ("llava", "paligemma") if family in only]
        if families:
            got = self.run(" + ".join(families) + " sample+log_prob", "vlm",
                           [str(s.k), *(str(models[family]) for family in families)])
            for family, result in (got or {}).get("vlms", {}).items():
                self.rows.append(Row(f"{family} sample+log_prob", result["samples_per_s"], peak_mb=got["peak_mb"],
                                     status=f"ok, sampled vs teacher-forced log p within {result['gap']:.1e}"))
        if "grpo" in only:
            grpo = self.work / "grpo"
            got = self.run("grpo (trl)", "tune", [
                "--task", "captioning", "--policy", str(models["llava"]), "--data", str(self.work / "shapes"), "--out",
                str(grpo), "--backend", "trl", "--baseline", "group_norm", "--reward", "cider_d=1.0", "--k", "2",
                "--batch_size", "2", "--steps", "1", "--max_new_tokens", "6", "--eval_every", "0", "--eval_size", "2",
                "--num_show", "0", "--log_with", "none", *bf16_flag])
            if got is not None:
                self.rows.append(row_from_metrics("grpo (trl)", grpo / "metrics.jsonl", 4, got["peak_mb"]))
        if "dpo" in only:
            got = self.run("dpo (trl)", "dpo", [
                "--policy", str(models["llava"]), "--data", str(self.work / "export"), "--out", str(self.work / "dpo"),
                "--steps", "1", "--batch_size", "2", "--warmup_steps", "0", *bf16_flag])
            if got is not None:
                self.rows.append(Row("dpo (trl)", peak_mb=got["peak_mb"]))
        if "rm" in only:
            got = self.run("reward model (1 epoch)", "train-reward", [
                "--task", "captioning", "--data", str(self.work / "export"), "--out", str(self.work / "rm"),
                "--epochs", "1", "--eval_every", "1000", "--progress", "false", *bf16_flag])
            if got is not None:
                self.rows.append(Row("reward model (1 epoch)", got["pairs_per_s"], peak_mb=got["peak_mb"]))

    def table(self) -> str:
        memory = "peak GPU MB" if not self.args.cpu else "peak RSS MB"
        lines = [f"| step | samples/s | sample | reward | fwd-bwd | other | KL step 0 | {memory} | status |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            shares = [f"{x:.0%}" for x in r.shares] if r.shares else ["–"] * 4
            lines.append(f"| {r.step} | {fmt(r.samples_per_s, '.1f')} | {' | '.join(shares)} | {fmt(r.kl0, '.1e')} | "
                         f"{fmt(r.peak_mb, '.0f')} | {r.status} |")
        return "\n".join(lines)


def row_from_metrics(name: str, path: Path, samples_per_step: int, peak_mb: float) -> Row:
    """Throughput and time shares of the steps after the first (warm-up), and the first step's KL."""
    steps = [r for r in read_jsonl(path) if "time/step" in r]
    if not steps:
        return Row(name, peak_mb=peak_mb, status=f"FAIL: no step in {path}")
    timed = steps[1:] or steps
    step_time = statistics.mean(r["time/step"] for r in timed)
    shares = tuple(statistics.mean(r.get(f"time/{part}", 0.0) for r in timed) / step_time
                   for part in ("sample", "reward", "forward_backward", "other"))
    return Row(name, samples_per_step / step_time, shares, steps[0].get("kl"), peak_mb)


def python_problem() -> str | None:
    """Why this Python cannot run the check (its torch sees no GPU, a dependency is missing or of another version
    than pyproject.toml asks), or None. torch's own pin is the CPU machine's: any CUDA torch will do."""
    import importlib.metadata

    try:
        from packaging.requirements import Requirement
    except ImportError:
        from pip._vendor.packaging.requirements import Requirement
    try:
        import torch
    except ImportError:
        return "no torch"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no GPU"
    for line in project_requirements():
        requirement = Requirement(line)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            return f"{requirement.name} is not installed"
        if version not in requirement.specifier:
            return f"{requirement.name} {version} is not {requirement.specifier}"
    return None


def project_requirements() -> list[str]:
    """pyproject.toml's dependencies, torch's pin left out."""
    import tomllib

    with open(REPO / "pyproject.toml", "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    return [d for d in dependencies if d.replace(" ", "").split("=")[0].split(">")[0].split("<")[0] != "torch"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def metric_steps(path: Path) -> set[int]:
    return {r["step"] for r in read_jsonl(path) if "time/step" in r}


def last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").replace("\r", "\n").splitlines()
             if line.strip()]
    return (lines[-1] if lines else "no output")[:200] + f" (log: {log})"


def one_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where there is a GPU")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves the steps run, measures nothing")
    parser.add_argument("--processes", type=int, default=0,
                        help="processes of the multi-process rows; 0: 2 when there are 2 GPUs or more, else none")
    parser.add_argument("--work", default="/tmp/vrlhf-gpu-check", help="folder for data, models and runs")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds after which no step starts")
    parser.add_argument("--only", default="", help=f"comma-separated steps to run (default: all): {', '.join(STEPS)}")
    parser.add_argument("--step_timeout", type=int, default=0, help="seconds one step may take (0: 240, smoke 180)")
    parser.add_argument("--python_problem", action="store_true",
                        help="say why this Python cannot run the check (exit 1), or nothing (exit 0)")
    parser.add_argument("--requirements", action="store_true", help="print the dependencies to install, torch aside")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)  # internal: run one step in this process
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.python_problem:
        problem = python_problem()
        print(problem or "", end="\n" if problem else "")
        return 1 if problem else 0
    if args.requirements:
        print("\n".join(project_requirements()))
        return 0
    if args.child:
        child(args.child, Path(args.result), rest[1:] if rest[:1] == ["--"] else rest)
        return 0
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); use --cpu for the CPU smoke run",
              file=sys.stderr)
        return 2
    processes = args.processes or (2 if not args.cpu and torch.cuda.device_count() >= 2 else 1)
    check = Check(args)
    device = "CPU" if args.cpu else f"{torch.cuda.device_count()} × {torch.cuda.get_device_name(0)}"
    check.say(f"torch {torch.__version__} on {device}; {'smoke sizes' if args.smoke else 'full sizes'}")
    check.all(processes)
    print(f"\n{check.table()}\n", flush=True)
    if processes == 1 and not args.cpu:
        print("(one GPU: the two-process rows need two)")
    return 1 if any(r.status.startswith(("FAIL", "resume FAIL")) for r in check.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
