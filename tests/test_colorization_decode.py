"""Colorization decoding converts each input to Lab once for its k samples, and the k samples back to RGB in one call
(issue #23 row 11), with the very pixels of decoding each sample on its own."""

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.color import lab2rgb

import vrlhf.tasks.colorization as colorization
from vrlhf.photos import photo_rows
from vrlhf.shapes import make_shapes


def one_at_a_time(policy, rows, tokens, k):
    """Each sample decoded on its own: its input to Lab, its ab upsampled, back to RGB."""
    grid, images = policy.meta["grid"], []
    bins = torch.tensor(policy.meta["ab_bins"] + [[0.0, 0.0], [0.0, 0.0]])
    for i, cells in enumerate(bins[tokens.clamp(max=len(bins) - 1)].view(-1, grid, grid, 2).permute(0, 3, 1, 2)):
        lab = colorization._lab(rows[i // k]["image"])
        ab = F.interpolate(cells[None], size=lab.shape[:2], mode="bilinear", align_corners=False)[0]
        lab[..., 1:] = ab.permute(1, 2, 0).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            images.append(Image.fromarray((lab2rgb(lab).clip(0, 1) * 255).round().astype(np.uint8)))
    return images


def test_decode_converts_each_input_once_and_gives_the_pixels_of_one_at_a_time(monkeypatch):
    policy = colorization.build_policy(image_size=16, grid=4, hidden_size=16, encoder_layers=1, decoder_layers=1,
                                       heads=2)
    rows = make_shapes(2, seed=0, size=24) + photo_rows()[:1]  # inputs of different sizes
    k = 3
    tokens = torch.randint(0, len(policy.meta["ab_bins"]) + 2, (len(rows) * k, 16),
                           generator=torch.Generator().manual_seed(0))
    want = one_at_a_time(policy, rows, tokens, k)
    calls = {"rgb2lab": 0, "lab2rgb": 0}
    for name in calls:
        real = getattr(colorization, name)
        monkeypatch.setattr(colorization, name, lambda *a, _real=real, _name=name, **kw: calls.__setitem__(
            _name, calls[_name] + 1) or _real(*a, **kw))
    got = colorization.decode(policy, rows, tokens, k)
    assert calls == {"rgb2lab": len(rows), "lab2rgb": len(rows)}  # not len(rows) * k each
    assert [im.size for im in got] == [im.size for im in want] == [r["image"].size for r in rows for _ in range(k)]
    for a, b in zip(got, want):
        assert np.array_equal(np.asarray(a), np.asarray(b))
