"""Real colour photos bundled with scikit-image, cropped into a small colorization evaluation set (no network)."""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image

# Colour images that ship inside the scikit-image wheel (no download needed).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


def load_photo(name: str) -> np.ndarray:
    """The scikit-image photo `name` as uint8 (H, W, 3)."""
    import skimage.data

    pixels = np.asarray(getattr(skimage.data, name)())
    if pixels.ndim != 3 or pixels.shape[2] < 3:
        raise ValueError(f"skimage.data.{name} is not a colour image")
    return pixels[:, :, :3].astype(np.uint8)


def photo_rows(size: int = 48, crops_per_photo: int = 4, seed: int = 0) -> list[dict]:
    """Deterministic square crops of each photo, resized to `size`: Rows with no captions and no attributes.

    Crop 0 is the central square (the whole subject); the others are random squares of at least half the
    short side, so the set mixes whole scenes with close-ups.
    """
    rows = []
    for p, name in enumerate(PHOTOS):
        try:
            pixels = load_photo(name)
        except Exception as error:  # an unusual scikit-image build: say so rather than shrink the set silently
            print(f"photo_rows: skipped skimage.data.{name}: {error}", file=sys.stderr)
            continue
        height, width = pixels.shape[:2]
        short = min(height, width)
        rng = np.random.default_rng([seed, p])
        for j in range(crops_per_photo):
            side = short if j == 0 else int(rng.integers(short // 2, short + 1))
            top = (height - side) // 2 if j == 0 else int(rng.integers(0, height - side + 1))
            left = (width - side) // 2 if j == 0 else int(rng.integers(0, width - side + 1))
            crop = Image.fromarray(pixels[top : top + side, left : left + side])
            image = crop.resize((size, size), Image.Resampling.LANCZOS)
            rows.append({"id": f"photo-{name}-{j}", "image": image, "captions": [], "attributes": None})
    return rows
