"""Box-set reward: (input image, a set of labelled boxes) → one value per box plus one for the set, summed.

For outputs that are boxes over the input (`--reads boxes`): it reads the boxes themselves, not a drawing of them.
Each box is seen the way an annotator checks it: what lies inside it and just around it (two small crops of the input,
sampled at the box's own scale: is a shape there, does the box fit it, of the colour and kind its label says), where
it is and how much it overlaps the set's other boxes (a second box on one shape), and its label's words. A set token
reads the input's features outside the boxes' union and inside it (what nobody boxed). Two transformer layers let
the boxes and the set token see each other; a head gives each box its value and the set token the rest (the shapes
left out).

The reward is the sum, so the model is dense by construction: `regions` gives the tuner one value per box and one for
the end, the form a box task's `token_rewards` spreads over each box's tokens and the end (docs/DEMO.md, "A reward
model that reads the boxes").
"""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from torch import nn

from reward_model.base import RewardModel, RewardModelConfig
from vrlhf.errors import ConfigError

CROP = 8  # a box's inner and surrounding crops are CROP × CROP samples of the input
AROUND = 2.0  # the surrounding crop covers the box's centre at this many times its size
WORD_BUCKETS = 1024  # a label's words are hashed (with their place from the end: "kind" is last) into this many


def _word_ids(label: str) -> list[int]:
    """Hashed ids (1..WORD_BUCKETS-1; 0 pads) of a label's words, each with its place from the end."""
    words = str(label).lower().split()[::-1]
    return [1 + zlib.crc32(f"{i}:{w}".encode()) % (WORD_BUCKETS - 1) for i, w in enumerate(words)] or [1]


def _conv(c_in: int, c_out: int, stride: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(8, c_out), nn.GELU())


def _pairwise_iou(boxes: torch.Tensor) -> torch.Tensor:
    """[N, M, 4] (x0, y0, x1, y1) -> [N, M, M] IoU."""
    lo = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    hi = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(-1)
    area = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0).prod(-1)
    return inter / (area[:, :, None] + area[:, None, :] - inter).clamp(min=1e-6)


class BoxSetRewardModel(RewardModel):
    """Scores box sets over their input image: the reward model of tasks whose outputs are boxes (`--reads boxes`)."""

    def __init__(self, cfg: RewardModelConfig):
        super().__init__(cfg)
        if cfg.clip or cfg.image_encoder:
            raise ConfigError("--reads boxes reads the input with its own small encoders: leave --image_encoder and "
                              "--clip empty")
        cfg.image_channels, w = 3, cfg.hidden_size
        if w % 4:
            raise ConfigError(f"--reads boxes needs --hidden_size a multiple of 4 (its 4 attention heads), got {w}")
        self.crops = nn.Sequential(_conv(6, 32, 1), _conv(32, 64, 2), _conv(64, 64, 2), nn.Flatten(),
                                   nn.Linear(64 * (CROP // 4) ** 2, w))
        self.geometry = nn.Sequential(nn.Linear(9, w), nn.GELU(), nn.Linear(w, w))
        self.words = nn.EmbeddingBag(WORD_BUCKETS, w, mode="sum", padding_idx=0)
        self.scene = nn.Sequential(_conv(3, 32, 2), _conv(32, 64, 2), _conv(64, 64, 1))  # once per input image
        self.unboxed = nn.Sequential(nn.Linear(2 * 64, w), nn.GELU(), nn.Linear(w, w))
        layer = nn.TransformerEncoderLayer(w, nhead=4, dim_feedforward=2 * w, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.sets = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.box_head = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, w), nn.GELU(), nn.Linear(w, 1))
        self.end_head = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, w), nn.GELU(), nn.Linear(w, 1))

    @classmethod
    def build(cls, cfg: RewardModelConfig) -> BoxSetRewardModel:
        return cls(cfg)

    @classmethod
    def from_config(cls, cfg: RewardModelConfig, tokenizer_dir=None) -> BoxSetRewardModel:
        return cls(cfg)

    def shown(self, rows: list[dict], outputs: list) -> list:
        """The box sets themselves (not drawn)."""
        return list(outputs)

    def inputs(self, rows: list[dict], outputs: list) -> dict:
        """The rows' images [R, 3, S, S]; per output (k per row, image-major): its boxes [N, M, 4] as fractions of
        the image (x0, y0, x1, y1), their labels' hashed words [N, M, W] and which of the M slots hold a box [N, M]."""
        k = len(outputs) // max(len(rows), 1)
        sets = []
        for i, output in enumerate(outputs):
            if not isinstance(output, list) or not all(isinstance(b, dict) and "box" in b for b in output):
                raise ConfigError(f"--reads boxes needs outputs that are box sets ({{'box': [x0, y0, x1, y1], "
                                  f"'label': ...}} lists), not {type(output).__name__} ({self.task} outputs)")
            width, height = rows[i // k]["image"].size
            sets.append([([b["box"][0] / width, b["box"][1] / height, b["box"][2] / width, b["box"][3] / height],
                          _word_ids(b.get("label", ""))) for b in output])
        slots = max(1, max(len(s) for s in sets))
        words = max([1] + [len(ids) for s in sets for _, ids in s])
        boxes = torch.zeros(len(outputs), slots, 4)
        ids = torch.zeros(len(outputs), slots, words, dtype=torch.long)
        present = torch.zeros(len(outputs), slots, dtype=torch.bool)
        for n, s in enumerate(sets):
            for m, (box, word_ids) in enumerate(s):
                boxes[n, m] = torch.tensor(box)
                ids[n, m, : len(word_ids)] = torch.tensor(word_ids)
                present[n, m] = True
        return {"image": self.pixels([r["image"] for r in rows]), "boxes": boxes, "words": ids, "present": present}

    def values(self, image: torch.Tensor, boxes: torch.Tensor, words: torch.Tensor, present: torch.Tensor
               ) -> torch.Tensor:
        """[N, M + 1]: each box's value (0 in empty slots), then the set's (the end's)."""
        n = len(boxes)
        features = self.scene(image).repeat_interleave(n // len(image), dim=0)  # [N, 64, S/4, S/4]: k outputs a row
        image = image.repeat_interleave(n // len(image), dim=0)
        boxes = torch.minimum(boxes, boxes.new_tensor(1.5)).clamp(min=-0.5)  # far outside reads as the edge region
        seq = self.sets(torch.cat([self.set_token(features, image.shape[-1], boxes, present)[:, None],
                                   self.box_tokens(image, boxes, words, present)], dim=1),
                        src_key_padding_mask=torch.cat([present.new_zeros(n, 1), ~present], dim=1))
        box_values = self.box_head(seq[:, 1:]).squeeze(-1) * present
        return torch.cat([box_values, self.end_head(seq[:, 0])], dim=1)

    def box_tokens(self, image: torch.Tensor, boxes: torch.Tensor, words: torch.Tensor, present: torch.Tensor
                   ) -> torch.Tensor:
        """[N, M, w]: each box as its two crops of the input, its geometry and overlaps, and its label's words."""
        n, m, _ = boxes.shape
        # the crops: CROP × CROP points inside the box, and around its centre at AROUND × its size
        steps = (torch.arange(CROP, device=boxes.device, dtype=boxes.dtype) + 0.5) / CROP
        lo, size = boxes[..., :2], (boxes[..., 2:] - boxes[..., :2]).clamp(min=1.0 / 64)
        centre = lo + size / 2
        grids = []
        for origin, extent in ((lo, size), (centre - AROUND * size / 2, AROUND * size)):
            gx = origin[..., 0, None] + extent[..., 0, None] * steps  # [N, M, CROP]
            gy = origin[..., 1, None] + extent[..., 1, None] * steps
            grid = torch.stack(torch.broadcast_tensors(gx[:, :, None, :], gy[:, :, :, None]), dim=-1)
            grids.append(F.grid_sample(image, (2 * grid - 1).reshape(n, m * CROP, CROP, 2), align_corners=False)
                         .view(n, 3, m, CROP, CROP).transpose(1, 2))  # [N, M, 3, CROP, CROP]
        crops = torch.cat(grids, dim=2).reshape(n * m, 6, CROP, CROP)
        # overlaps with the set's other boxes: the largest with an earlier box (a duplicate), and with any
        iou = _pairwise_iou(boxes) * (present[:, :, None] & present[:, None, :])
        iou = iou * (1 - torch.eye(m, device=iou.device))
        earlier = torch.tril(iou, diagonal=-1).amax(dim=-1) if m > 1 else iou.new_zeros(n, m)
        shape = torch.cat([boxes, size, size.prod(-1, keepdim=True), earlier[..., None], iou.amax(-1)[..., None]], -1)
        return (self.crops(crops).view(n, m, -1) + self.geometry(shape)
                + self.words(words.view(n * m, -1)).view(n, m, -1))

    def set_token(self, features: torch.Tensor, side: int, boxes: torch.Tensor, present: torch.Tensor
                  ) -> torch.Tensor:
        """[N, w]: the input's features where no box is and where boxes are (what is left unboxed)."""
        centres = (torch.arange(side, device=boxes.device, dtype=boxes.dtype) + 0.5) / side
        inside_x = (centres >= boxes[..., 0, None]) & (centres < boxes[..., 2, None])  # [N, M, S]
        inside_y = (centres >= boxes[..., 1, None]) & (centres < boxes[..., 3, None])
        covered = ((inside_y[..., :, None] & inside_x[..., None, :]) & present[..., None, None]).any(1)
        covered = F.adaptive_avg_pool2d(covered[:, None].to(features.dtype), features.shape[-2:])  # share of a cell
        return self.unboxed(torch.cat([(features * (1 - covered)).mean((2, 3)), (features * covered).mean((2, 3))],
                                      dim=1))

    def forward(self, image: torch.Tensor, boxes: torch.Tensor, words: torch.Tensor, present: torch.Tensor,
                dense: bool = False):
        """Rewards [N]: the sum of the boxes' values and the set's. With `dense`: (rewards, values [N, M + 1], the
        values that marks compare [N, M + 1]: the boxes', not the set's: a marked box must score below the unmarked
        boxes of its output (reward_model/losses.py marks_loss))."""
        values = self.values(image, boxes, words, present)
        if dense:
            return values.sum(1), values, torch.cat([present, present.new_zeros(len(present), 1)], dim=1)
        return values.sum(1)

    @property
    def regions(self):
        """Always dense: per output one value per box (in order) and one for the end, the form a box task's
        `token_rewards` spreads over the box tokens and the end (tuner/rewards.py)."""
        return self.output_regions

    @torch.no_grad()
    def output_regions(self, rows: list[dict], outputs: list) -> list:
        chunks = self.in_chunks(rows, outputs, self.values, 64, "regions")
        values = [v.cpu().numpy() for chunk in chunks for v in chunk]
        return [list(v[: len(o)]) + [float(v[-1])] for v, o in zip(values, outputs, strict=True)]
