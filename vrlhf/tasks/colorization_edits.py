"""Candidate edits of a colorization: copies of a policy sample moved in the directions annotators reward.

`vrlhf sample --edits N` puts such copies into the labeling queue beside the policy's own samples, so the reward
model sees more and less colour, and a clean against a bleeding background, on the same image (docs/DEMO.md, "Candidate
edits"). They read only the output itself, never the row's hidden ground truth: real users have none.

    chroma×0.5, chroma×1.5   a and b (CIELAB) scaled, lightness kept (out-of-gamut colours clipped, as `decode` does)
    neutral background       a = b = 0 on the background: the pixels joined to the image border whose lightness is
                             within BACKGROUND_TOLERANCE of the border's median lightness (a flat backdrop)
    one colour per region    each connected region off the background gets its median colour: no stray colour
                             inside an object (regions are split where the lightness jumps, as between two shapes)
"""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.color import lab2rgb, rgb2lab
from skimage.morphology import remove_small_holes

CHROMA_SCALES = (0.5, 1.5)
# L* units. The shapes' gray background has noise of std 2 gray levels (~0.8 L*); a shape's own lightness is almost
# never this close to it, and a shape that is stays coloured unless it also touches the border region.
BACKGROUND_TOLERANCE = 3.0
MIN_TEXTURE = 0.3  # L*: a border whose 3x3 std is below this is a flat backdrop (no texture test)
SPECKLE = 8  # pixels: holes this small in the background are its noise (a small shape covers ~50)


def _lab(image: Image.Image) -> np.ndarray:
    return rgb2lab(np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0)


def _rgb(lab: np.ndarray) -> Image.Image:
    with warnings.catch_warnings():  # out-of-gamut colours are clipped, as decode clips them
        warnings.simplefilter("ignore")
        rgb = lab2rgb(lab)
    return Image.fromarray((rgb.clip(0, 1) * 255).round().astype(np.uint8), "RGB")


def scale_chroma(output: Image.Image, scale: float) -> Image.Image:
    """`output` with its colour (a, b) multiplied by `scale`, its lightness unchanged."""
    lab = _lab(output)
    lab[..., 1:] *= scale
    return _rgb(lab)


def background_mask(output: Image.Image, tolerance: float = BACKGROUND_TOLERANCE) -> np.ndarray:
    """(H, W) bool: the background estimated from the image alone, the backdrop around the subject: pixels that look
    like the image's border, within `tolerance` L* of its median lightness and (where the border has a texture, as
    the shapes' noisy gray has) at least half as textured as it is, connected to the border through such pixels;
    holes of at most SPECKLE pixels in it are its own noise. The texture test keeps a flat subject of the backdrop's
    lightness out of it: on the shapes, a shape's gray is often within 1-3 L* of the background's."""
    lightness = _lab(output)[..., 0]
    mean = ndimage.uniform_filter(lightness, 3, mode="reflect")
    texture = np.sqrt(np.maximum(ndimage.uniform_filter(lightness**2, 3, mode="reflect") - mean**2, 0))  # 3x3 std
    edge = np.zeros(lightness.shape, bool)
    edge[[0, -1]], edge[:, [0, -1]] = True, True
    like = np.abs(lightness - np.median(lightness[edge])) <= tolerance
    if np.median(texture[edge]) > MIN_TEXTURE:
        like &= texture >= 0.5 * np.median(texture[edge])
    regions, _ = ndimage.label(like)
    touching = np.unique(regions[edge])
    return remove_small_holes(np.isin(regions, touching[touching > 0]), max_size=SPECKLE)


def neutral_background(output: Image.Image) -> Image.Image:
    """`output` with a = b = 0 on its estimated background (`background_mask`): no colour bleeding off the subject."""
    lab = _lab(output)
    lab[background_mask(output)] *= np.array([1.0, 0.0, 0.0])
    return _rgb(lab)


def one_colour_per_region(output: Image.Image, tolerance: float = BACKGROUND_TOLERANCE) -> Image.Image:
    """`output` with each region off its estimated background (`background_mask`) in one colour, the region's median
    (a, b): connected pixels whose lightness differs from a neighbour's by at most `tolerance` L* make a region."""
    lab = _lab(output)
    lightness = lab[..., 0]
    off = ~background_mask(output, tolerance)
    smooth = np.ones_like(off)  # no lightness jump to the right or below: the edge between two shapes splits them
    smooth[:, :-1] &= np.abs(np.diff(lightness, axis=1)) <= tolerance
    smooth[:-1] &= np.abs(np.diff(lightness, axis=0)) <= tolerance
    regions, n = ndimage.label(off & smooth)
    for label in range(1, n + 1):
        region = regions == label
        lab[region, 1:] = np.median(lab[region, 1:], axis=0)
    return _rgb(lab)


def edits(row: dict, output: Image.Image, rng: np.random.Generator,
          others: list | tuple = ()) -> dict[str, Image.Image]:
    """The edits of one colorization, by name. `row` and `others` (the other samples of the same input) are not
    needed here; they are the signature every task's `edits` shares (captioning reads `others`)."""
    out = {f"chroma×{s:g}": scale_chroma(output, s) for s in CHROMA_SCALES}
    out["neutral background"] = neutral_background(output)
    out["one colour per region"] = one_colour_per_region(output)
    return out
