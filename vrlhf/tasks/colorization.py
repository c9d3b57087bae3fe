"""Colorization: L channel -> a coarse grid of quantised ab colour tokens, sampled autoregressively.

The policy is a `VisionEncoderDecoderModel` (ViT over the L channel + GPT2 whose vocabulary is ab colour bins).
It emits `grid × grid` tokens in raster order; decoding upsamples the ab grid to the input's full resolution and
merges it with the original L. Because each token is sampled given the previous ones, k samples of one image are
different but coherent colorizations (a shape that starts red stays red), with exact log-probs.
"""

from __future__ import annotations

import random
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.color import lab2rgb, rgb2lab

from vrlhf import REPO
from vrlhf.errors import ConfigError, ModelError
from vrlhf.metrics import ab_error, colorfulness, psnr, saturation
from vrlhf.models import vit_gpt2
from vrlhf.policy import SequencePolicy, saved_meta
from vrlhf.tasks.colorization_edits import edits as edits  # optional task member: vrlhf sample --edits

# ---- what this task is (the task contract, docs/ARCHITECTURE.md) ----------------------------------------------
NAME = "colorization"
# Outputs are RGB images: stored as PNGs in the labeling DB and exports, shown as they are (the reward model for shown
# images scores the image, with the gray input).
STORED = "image"
SHOWN = "image"
METRIC_REWARDS = ("colorfulness", "fidelity")
# Fidelity anchors colourfulness: alone, colourfulness saturates everything; weight 1 barely holds it (docs/TUNER.md).
DEFAULT_REWARDS = ("colorfulness=1.0", "fidelity=5.0")  # `vrlhf tune` without --reward
DEMO_POLICY = REPO / "data/demo/colorizer"  # the committed demo checkpoint (scripts/make_demo_checkpoints.sh)
ORACLE = "colorization_oracle"  # vrlhf.tasks.colorization_oracle: the simulated annotator
# With a dense reward each token is credited with its own cell's value (`vrlhf tune --token_credit auto`): a cell's
# colour barely changes what the others earn, so the bias is small and the variance far lower than reward-to-go's
# (the oracle bound at the demo's budget: 0.70-0.71 against 0.54 to-go and 0.50 sequence; docs/DEMO.md).
TOKEN_CREDIT = "own"
# A dense reward model reads 64 px: the tiny CNN's stride-8 stage then lies exactly on the colour grid
# (docs/REWARD_MODEL.md); `vrlhf demo --dense on` trains with these.
DENSE_REWARD_SETTINGS = {"image_size": 64}
# Reward models (`vrlhf train-reward`): the tiny CNN from scratch reaches 98% of the annotator's ceiling with flips.
REWARD_IMAGE_ENCODER = ""
FLIPS_KEEP_PREFERENCES = True  # turning the input and both colorizations together keeps which one is better
# The demo report's columns (loop/report.py): held-out metrics, then the annotators' judgment against MLE
REPORT_METRICS = ("colorfulness", "saturation", "ab_error", "oracle_score", "win_rate_vs_mle_greedy",
                  "win_rate_vs_mle_sampled", "ties_vs_mle_greedy")


def row_problem(row: dict) -> str | None:
    """Any row with an image is usable: the image is its own ground truth."""
    return None


@lru_cache(maxsize=4)
def ab_bins(step: float = 16.0) -> np.ndarray:
    """Centres (n_bins, 2) of the ab grid cells (width `step`) that some sRGB colour falls into: the colour vocabulary.

    Cells are centred on multiples of `step`, so (0, 0) is a bin: gray backgrounds can be decoded exactly neutral.
    """
    levels = np.linspace(0, 1, 40)
    rgb = np.stack(np.meshgrid(levels, levels, levels), axis=-1).reshape(1, -1, 3)
    ab = rgb2lab(rgb)[0, :, 1:]
    cells = np.unique(np.round(ab / step).astype(int), axis=0)
    return (cells * step).astype(np.float32)


def build_policy(
    image_size: int = 48,
    grid: int = 8,
    patch_size: int = 8,
    hidden_size: int = 128,
    encoder_layers: int = 3,
    decoder_layers: int = 3,
    heads: int = 4,
    bin_step: float = 16.0,
    dropout: float = 0.0,
    seed: int = 0,
) -> SequencePolicy:
    """A small ViT (1 channel: L) + GPT2 over ab bins, built from configs (the demo colorizer's architecture)."""
    bins = ab_bins(bin_step)
    start, pad = len(bins), len(bins) + 1  # two extra tokens after the colour bins
    model = vit_gpt2(
        channels=1, vocab_size=len(bins) + 2, max_positions=grid * grid + 1, start_token_id=start,
        pad_token_id=pad, eos_token_id=None, image_size=image_size, patch_size=patch_size, hidden_size=hidden_size,
        encoder_layers=encoder_layers, decoder_layers=decoder_layers, heads=heads, dropout=dropout, seed=seed,
    )
    return SequencePolicy(
        model, None, start_token_id=start, eos_token_id=None, pad_token_id=pad, max_new_tokens=grid * grid,
        meta={"task": NAME, "image_size": image_size, "grid": grid, "bin_step": bin_step, "ab_bins": bins.tolist()},
    )


def new_policy(train_rows: list[dict], **sizes) -> SequencePolicy:
    """A fresh policy (the colour vocabulary is fixed: the rows are not needed)."""
    return build_policy(**sizes)


COLORIZER_META = ("image_size", "grid", "ab_bins")  # what a colorizer's policy.json holds (build_policy)


def load_policy(path: str | Path) -> SequencePolicy:
    """A colorizer: ours, its policy.json holding COLORIZER_META. Anything else (a captioner above all) is one
    ModelError line, told from a local directory's files before any weights load, so no command writes anything."""
    if Path(path).is_dir():
        meta = saved_meta(path)
        if meta is None:  # no policy.json: a checkpoint we did not save (a captioner), or no model at all
            from vrlhf.families import model_type

            model_type(path)  # ModelError (one line) for a folder that is no model of a supported family
        check_colorizer(path, meta or {})
    try:
        policy = SequencePolicy.from_pretrained(path).eval()
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: cannot load a policy ({str(error).splitlines()[0]})") from None
    check_colorizer(path, policy.meta)  # a hub id is only known once loaded
    return policy


def check_colorizer(path: str | Path, meta: dict) -> None:
    """ModelError naming what the policy is when it is not a colorizer (every other family here is a captioner)."""
    if all(key in meta for key in COLORIZER_META):
        return
    task = meta.get("task") or "captioning"
    what = "a captioner" if task == "captioning" else f"a {task} policy"
    raise ModelError(f"{path}: this policy is {what}; the colorization task needs a colorizer (a policy.json with "
                     f"{', '.join(COLORIZER_META)}, as `vrlhf pretrain --task colorization` writes)")


def _lab(image: Image.Image, size: int | None = None) -> np.ndarray:
    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return rgb2lab(np.asarray(image, dtype=np.float32) / 255.0)  # (H, W, 3): L in 0..100, ab ~ -110..110


def grayscale(image: Image.Image) -> Image.Image:
    """The input an annotator sees: the image's L channel as a gray RGB image."""
    lab = _lab(image)
    lab[..., 1:] = 0
    return Image.fromarray((lab2rgb(lab) * 255).round().astype(np.uint8))


def show_input(image: Image.Image) -> Image.Image:
    """What an annotator sees of the input: what the policy saw, the lightness alone."""
    return grayscale(image)


def pixel_values(policy: SequencePolicy, images: list[Image.Image]) -> torch.Tensor:
    """(B, 1, S, S): the L channel scaled to [-1, 1]; colour never reaches the policy."""
    size = policy.meta["image_size"]
    x = np.stack([_lab(im, size)[..., 0] / 50.0 - 1.0 for im in images]).astype(np.float32)
    return torch.from_numpy(x)[:, None].to(policy.device)


def reference_tokens(policy: SequencePolicy, rows: list[dict], rng: random.Random | None = None):
    """Ground-truth colour tokens: each grid cell's mean ab, snapped to the nearest bin. (tokens, mask)."""
    size, grid = policy.meta["image_size"], policy.meta["grid"]
    bins = torch.tensor(policy.meta["ab_bins"])
    ab = torch.from_numpy(np.stack([_lab(r["image"], size)[..., 1:] for r in rows])).permute(0, 3, 1, 2)
    cell_ab = F.adaptive_avg_pool2d(ab.float(), grid).flatten(2).transpose(1, 2)  # (B, grid*grid, 2)
    tokens = torch.cdist(cell_ab, bins[None].expand(len(rows), -1, -1)).argmin(-1)
    return tokens.to(policy.device), torch.ones_like(tokens, dtype=torch.bool).to(policy.device)


def heldout_targets(policy: SequencePolicy, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Teacher-forcing targets of the held-out loss: the ground-truth colour tokens -> (tokens (B, T), mask, 1)."""
    tokens, mask = reference_tokens(policy, rows)
    return tokens, mask, 1


def ideal_outputs(policy: SequencePolicy, rows: list[dict], rng: np.random.Generator | None = None) -> list:
    """The best this policy's grid can emit of the truth: each cell's true mean colour, snapped to its bins."""
    tokens, _ = reference_tokens(policy, rows)
    return decode(policy, rows, tokens)


def transplant(output: Image.Image, row: dict) -> Image.Image:
    """Another input's colorization carried onto `row`: its colours (ab, resized) on this input's own L, as `decode`
    merges them. Colour lands where the other image had its shapes: almost surely a worse colorization of this one."""
    lab = _lab(row["image"])
    h, w = lab.shape[:2]
    lab[..., 1:] = _lab(output.resize((w, h), Image.BILINEAR))[..., 1:]
    with warnings.catch_warnings():  # out-of-gamut ab is clipped to sRGB on purpose
        warnings.simplefilter("ignore")
        rgb = lab2rgb(lab)
    return Image.fromarray((rgb.clip(0, 1) * 255).round().astype(np.uint8))


def decode(policy: SequencePolicy, rows: list[dict], tokens: torch.Tensor, k: int = 1) -> list[Image.Image]:
    """Tokens (B*k, grid²) -> RGB images at each input's full resolution: upsampled ab merged with the original L.
    Each input goes to Lab once for its k samples, and its k samples go back to RGB in one call."""
    grid = policy.meta["grid"]
    bins = torch.tensor(policy.meta["ab_bins"] + [[0.0, 0.0], [0.0, 0.0]])  # start/pad tokens decode to neutral
    ab_grid = bins[tokens.cpu().clamp(max=len(bins) - 1)].view(-1, grid, grid, 2).permute(0, 3, 1, 2)  # (B*k, 2, g, g)
    images = []
    for i in range(len(ab_grid) // k):
        lab = _lab(rows[i]["image"])  # (H, W, 3)
        h, w = lab.shape[:2]
        ab = F.interpolate(ab_grid[i * k : (i + 1) * k], size=(h, w), mode="bilinear", align_corners=False)
        samples = np.repeat(lab[None], k, axis=0)  # (k, H, W, 3): the input's L under each sample's ab
        samples[..., 1:] = ab.permute(0, 2, 3, 1).numpy()
        with warnings.catch_warnings():  # out-of-gamut ab is clipped to sRGB on purpose
            warnings.simplefilter("ignore")
            rgb = lab2rgb(samples)
        images += [Image.fromarray(image) for image in (rgb.clip(0, 1) * 255).round().astype(np.uint8)]
    return images


def metric_reward(name: str, train_rows: list[dict] | None = None, scale: float = 100.0):
    """`colorfulness` (Hasler & Süsstrunk / scale) or `fidelity` (−mean ab error to ground truth / scale)."""
    if name == "colorfulness":
        def colorfulness_reward(rows, outputs):
            return torch.as_tensor(colorfulness(outputs) / scale, dtype=torch.float32)

        return colorfulness_reward
    if name == "fidelity":
        def fidelity_reward(rows, outputs):
            k = len(outputs) // len(rows)
            truth = [rows[i // k]["image"].convert("RGB") for i in range(len(outputs))]
            return torch.as_tensor(-ab_error(outputs, truth) / scale, dtype=torch.float32)

        return fidelity_reward
    raise ConfigError(f"unknown colorization metric reward {name!r}; available: {', '.join(METRIC_REWARDS)}")


def token_rewards(policy: SequencePolicy, tokens: torch.Tensor, outputs: list, regions: list) -> torch.Tensor:
    """Each sampled token's share of a dense reward -> (N, T): `regions[i]` is a map (h, w) of what each pixel of
    output i adds (e.g. `colorization_oracle.pixel_contributions`; a coarser map is read as the pixels of a smaller
    image). Token t colours cell t (raster order), and `decode` upsamples the cells bilinearly, so a pixel's value is
    split among the cells that colour it by those same weights: the transpose of the upsampling. Each row sums to its
    map's sum. (Crediting a pixel to the one cell it lies in instead gave a lower bound: docs/DEMO.md.)"""
    grid = policy.meta["grid"]
    if tokens.shape[1] != grid * grid:
        raise ValueError(f"colorization: {tokens.shape[1]} tokens per sample, but the policy's grid has {grid * grid}")
    cells = []
    for values in regions:
        values = np.asarray(values, dtype=np.float64)
        rows, cols = _bilinear_weights(values.shape[0], grid), _bilinear_weights(values.shape[1], grid)
        cells.append((rows.T @ values @ cols).ravel())
    return torch.tensor(np.stack(cells), dtype=torch.float32)


def _bilinear_weights(n: int, grid: int) -> np.ndarray:
    """(n, grid): how much each of the grid's cells colours each of n pixels when `decode` upsamples (bilinear)."""
    eye = torch.eye(grid, dtype=torch.float64)[:, None, :]  # (grid, 1, grid): one cell at a time
    return F.interpolate(eye, size=n, mode="linear", align_corners=False)[:, 0, :].T.numpy()


def eval_metrics(rows: list[dict], outputs: list[Image.Image]) -> dict[str, float]:
    truth = [row["image"].convert("RGB") for row in rows]
    metrics = {
        "colorfulness": float(np.mean(colorfulness(outputs))),
        "ab_error": float(np.mean(ab_error(outputs, truth))),
        "psnr": float(np.mean(psnr(outputs, truth))),
        "saturation": float(np.mean(saturation(outputs))),
        "truth_colorfulness": float(np.mean(colorfulness(truth))),
    }
    if all(row.get("attributes") for row in rows):
        from vrlhf.tasks import colorization_oracle

        metrics["oracle_score"] = float(np.mean([colorization_oracle.score(r, o) for r, o in zip(rows, outputs)]))
    return metrics


def render(row: dict, output: Image.Image) -> Image.Image:
    """What an annotator (and the reward model) sees of one output for `row`: the colorization itself."""
    return output


def to_stored(output: Image.Image) -> Image.Image:
    """An output as the labeling DB and exports keep it (STORED: image, saved as PNG): the colorization, RGB."""
    return output.convert("RGB")


def from_stored(value: Image.Image, row: dict) -> Image.Image:
    """An output back from what `to_stored` kept (for the input `row`): the image, RGB."""
    return value.convert("RGB")
