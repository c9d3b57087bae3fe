"""Peak memory of teacher forcing (issue #23 row 9): chunked logit − logsumexp vs the full (N, T, V) log_softmax.

    python bench/bench_teacher_forcing_memory.py [--n 512] [--t 32] [--vocab 32000] [--hidden 64]

Each variant runs in a fresh process on the CPU, without gradients (the KL anchor's pass) and with a backward pass
(the loss), and reports its peak resident memory above what the process held just before the call (ru_maxrss minus
the RSS read from /proc). The model is a small ViT + GPT2 with a V-token vocabulary (hidden 64), so nearly all of the
memory is the logits: 2 GB per fp32 copy at N = 512, T = 32, V = 32k. "full" is the code before the change, kept
here verbatim: the whole logits tensor, an fp32 copy divided by the temperature, and its log_softmax.
Prints a markdown table; about a minute and 10 GB of memory at the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

VARIANTS = ("full", "chunked")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def full_token_log_probs(policy, pixel_values, tokens, mask, k: int, temperature: float = 1.0):
    """Teacher forcing as it was: logits (N, T, V), an fp32 copy, log_softmax over all of it, then the targets."""
    import torch
    import torch.nn.functional as F

    logits = policy.adapter.teacher_forced_logits(policy, pixel_values, tokens, k)  # (N, T, V)
    log_p = F.log_softmax(policy._allowed(logits.float(), policy._banned(logits.device)) / temperature, dim=-1)
    picked = log_p.gather(2, tokens[:, :, None]).squeeze(2)
    return torch.where(mask, picked, 0.0)


def measure(variant: str, n: int, t: int, vocab: int, hidden: int, k: int, grad: bool) -> dict:
    """In this (fresh) process: the peak RSS a call of `variant` adds, and its time."""
    import torch

    from vrlhf.models import vit_gpt2
    from vrlhf.policy import SequencePolicy

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = vit_gpt2(channels=3, vocab_size=vocab, max_positions=t + 1, start_token_id=0, pad_token_id=1,
                     eos_token_id=2, image_size=16, patch_size=8, hidden_size=hidden, encoder_layers=1,
                     decoder_layers=1, heads=2)
    policy = SequencePolicy(model.eval(), start_token_id=0, eos_token_id=2, pad_token_id=1, max_new_tokens=t)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(n // k, 3, 16, 16, generator=generator)
    tokens = torch.randint(3, vocab, (n, t), generator=generator)
    mask = torch.ones(n, t, dtype=torch.bool)
    run = full_token_log_probs if variant == "full" else policy.token_log_probs
    run(policy, pixels[:1], tokens[:k], mask[:k], k) if variant == "full" else run(pixels[:1], tokens[:k], mask[:k], k)
    before = rss_mb()
    start = time.perf_counter()
    with torch.set_grad_enabled(grad):
        log_probs = run(policy, pixels, tokens, mask, k) if variant == "full" else run(pixels, tokens, mask, k)
        if grad:
            log_probs.sum().backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"variant": variant, "grad": grad, "peak_added_mb": peak - before, "seconds": seconds,
            "checksum": float(log_probs.detach().sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="sequences (images × k)")
    parser.add_argument("--t", type=int, default=32, help="tokens per sequence")
    parser.add_argument("--vocab", type=int, default=32000, help="vocabulary size")
    parser.add_argument("--hidden", type=int, default=64, help="model width")
    parser.add_argument("--k", type=int, default=8, help="samples per image")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)  # internal: one measurement, as JSON
    args = parser.parse_args()
    if args.child:
        variant, grad = args.child.split(":")
        print(json.dumps(measure(variant, args.n, args.t, args.vocab, args.hidden, args.k, grad == "grad")))
        return
    gib = args.n * args.t * args.vocab * 4 / 2**30
    print(f"N = {args.n}, T = {args.t}, V = {args.vocab}: one fp32 (N, T, V) tensor is {gib:.2f} GiB\n")
    print("| pass | full log_softmax: peak added | chunked: peak added | drop | full: s | chunked: s |")
    print("|---|---|---|---|---|---|")
    for grad in (False, True):
        results = {}
        for variant in VARIANTS:
            command = [sys.executable, __file__, "--child", f"{variant}:{'grad' if grad else 'nograd'}", "--n",
                       str(args.n), "--t", str(args.t), "--vocab", str(args.vocab), "--hidden", str(args.hidden),
                       "--k", str(args.k)]
            results[variant] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True
                                                         ).stdout.splitlines()[-1])
        full, chunked = results["full"], results["chunked"]
        assert abs(full["checksum"] - chunked["checksum"]) <= 1e-4 * abs(full["checksum"]), (full, chunked)
        print(f"| {'forward + backward' if grad else 'forward, no grad'} | {full['peak_added_mb']:.0f} MB | "
              f"{chunked['peak_added_mb']:.0f} MB | {full['peak_added_mb'] / chunked['peak_added_mb']:.1f}× | "
              f"{full['seconds']:.2f} | {chunked['seconds']:.2f} |")


if __name__ == "__main__":
    main()
