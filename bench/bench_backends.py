"""Tuning backends and samplers: TRL's RLOO vs GRPO (and our loop) on one tiny VLM with one reward, and our sampler
vs Hugging Face `generate` on a captioner of ViT-B/16 + GPT2-small shape (random weights).

    OMP_NUM_THREADS=1 python bench/bench_backends.py [--steps 8] [--images 4] [--k 4] [--repeats 5]

Writes bench/results/backends.json and backends.md; prints the markdown tables. Tuning: completions per second over
the steps after the first (warm-up), and where a step's time goes (`time/*` of metrics.jsonl): generation (`sample`),
the loss's forward + backward, the reward, and `other`, the share that is neither generation nor forward-backward
(TRL: tokenising prompts, image processing, the no-grad log-prob pass RLOO always makes for its importance ratio
and GRPO skips when generation and optimisation steps are aligned, the optimiser step, logging). Sampling: sequences
per second, k per image, a fixed number of new tokens (no EOS).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = Path(__file__).parent / "results"


def tuning(args, root: Path) -> list[dict]:
    from tuner.config import TuneConfig
    from tuner.train import tune
    from vrlhf.models import tiny_checkpoint
    from vrlhf.rundir import read_metrics
    from vrlhf.shapes import make_shapes, write_imagefolder

    rows = make_shapes(48, seed=0, size=32)
    write_imagefolder(rows[:40], root / "data" / "train")
    write_imagefolder(rows[40:], root / "data" / "test")
    tiny_checkpoint("llava", root / "vlm", texts=[c for r in rows for c in r["captions"]], image_size=32, hidden=64)
    out = []
    for name, backend, baseline in [("TRL RLOO", "trl", "loo"), ("TRL GRPO", "trl", "group_norm"),
                                    ("ours (REINFORCE, LOO)", "ours", "loo")]:
        cfg = TuneConfig(task="captioning", policy=str(root / "vlm"), data=str(root / "data"),
                         out=str(root / f"{backend}-{baseline}"), backend=backend, baseline=baseline,
                         reward=["cider_d=1.0"], k=args.k, batch_size=args.images, steps=args.steps, lr=1e-4,
                         max_new_tokens=args.tokens, eval_every=0, save_every=0, eval_size=2, num_show=0,
                         log_with="none", seed=0)
        start = time.perf_counter()
        tune(cfg)
        wall = time.perf_counter() - start
        records = [record for _, record in read_metrics(Path(cfg.out) / "metrics.jsonl")]
        steps = [r for r in records if "reward" in r][1:]  # the first step warms up
        mean = {key: statistics.mean(r.get(key, 0.0) for r in steps)
                for key in ("time/step", "time/sample", "time/forward_backward", "time/reward", "time/other")}
        out.append({"backend": name, "completions_per_step": args.images * args.k, "steps_timed": len(steps),
                    "completions_per_s": args.images * args.k / mean["time/step"], "wall_s": wall,
                    **{f"share/{key[5:]}": mean[key] / mean["time/step"] for key in mean if key != "time/step"},
                    "step_s": mean["time/step"]})
    return out


def sampling(args) -> list[dict]:
    from PIL import Image
    from transformers import GPT2Config, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig

    from vrlhf.policy import SequencePolicy

    torch.manual_seed(0)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(ViTConfig(), GPT2Config(add_cross_attention=True))
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = 50256
    model = VisionEncoderDecoderModel(config).eval()  # ViT-B/16 at 224 px + GPT2-small, random weights
    policy = SequencePolicy(model, start_token_id=50256, eos_token_id=50256, pad_token_id=50256,
                            max_new_tokens=args.tokens)
    images = [Image.new("RGB", (224, 224), (40 * i, 90, 160)) for i in range(args.images)]
    pixels = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
                          for im in images])  # (B, 3, 224, 224)
    n = args.images * args.k

    def ours():
        s = policy.sample(pixels, k=args.k, max_new_tokens=args.tokens, generator=torch.Generator().manual_seed(0))
        assert s.tokens.shape == (n, args.tokens)

    def generate():
        out = model.generate(pixel_values=pixels, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                             num_return_sequences=args.k, max_new_tokens=args.tokens, min_new_tokens=args.tokens)
        assert out.shape == (n, args.tokens + 1)

    samplers = [("ours: SequencePolicy.sample", ours), ("HF generate(num_return_sequences=k)", generate)]
    times = {name: [] for name, _ in samplers}
    with torch.inference_mode():
        for _, fn in samplers:
            fn()  # warm-up
        for _ in range(args.repeats):  # interleaved, so that load from other jobs falls on both alike
            for name, fn in samplers:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    results = [{"sampler": name, "sequences": n, "new_tokens": args.tokens, "best_s": min(times[name]),
                "median_s": statistics.median(times[name]), "sequences_per_s": n / min(times[name])}
               for name, _ in samplers]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="tuning steps per backend (the first is not timed)")
    parser.add_argument("--images", type=int, default=4, help="images per step / per sampling batch")
    parser.add_argument("--k", type=int, default=4, help="samples per image")
    parser.add_argument("--tokens", type=int, default=16, help="new tokens per sample")
    parser.add_argument("--repeats", type=int, default=5, help="timed sampling repeats, interleaved (best is reported)")
    args = parser.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        tune_rows = tuning(args, Path(tmp))
    sample_rows = sampling(args)
    import trl

    env = {"torch_threads": torch.get_num_threads(), "device": "cpu", "load_average": os.getloadavg(),
           "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__, **vars(args)}
    lines = [f"Tiny LLaVA (CLIP 32 px + Llama width 64, 1 layer each), CIDEr-D reward, {args.images} images × k = "
             f"{args.k} per step, {args.tokens} new tokens, {torch.get_num_threads()} CPU thread(s):", "",
             "| backend | completions/s | step (s) | generation | forward-backward | reward | other |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['backend']} | {r['completions_per_s']:.1f} | {r['step_s']:.3f} | {r['share/sample']:.0%} | "
              f"{r['share/forward_backward']:.0%} | {r['share/reward']:.0%} | {r['share/other']:.0%} |"
              for r in tune_rows]
    lines += ["", f"ViT-B/16 (224 px) + GPT2-small captioner, random weights: {args.images} images × k = {args.k}, "
                  f"{args.tokens} new tokens, full-distribution sampling:", "",
              f"| sampler | sequences/s | best of {args.repeats} (s) | median (s) |", "|---|---|---|---|"]
    lines += [f"| {r['sampler']} | {r['sequences_per_s']:.1f} | {r['best_s']:.2f} | {r['median_s']:.2f} |"
              for r in sample_rows]
    speedup = sample_rows[0]["sequences_per_s"] / sample_rows[1]["sequences_per_s"]
    lines += ["", f"ours / generate: {speedup:.2f}× (load average {os.getloadavg()[0]:.1f} on "
                  f"{os.cpu_count()} cores while measuring)"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "backends.json").write_text(json.dumps({"tuning": tune_rows, "sampling": sample_rows, "env": env},
                                                      indent=1) + "\n")
    (RESULTS / "backends.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
