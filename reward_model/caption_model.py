"""Caption reward: (input image, caption) → scalar, from an image encoder, a sentence encoder and an MLP head.

Default: a tiny ViT (or a captioning policy's vision encoder, `image_encoder=DIR`) and the bundled MiniLM
sentence encoder with mean pooling. With `clip=DIR`, a CLIPModel provides both towers. The head sees
[img; text; img ⊙ text; att ⊙ text], where img is the mean image token and att the image tokens pooled by
attention with the caption as the query: a caption's "red circle on the left" looks at the left of the grid.
While the text encoder is frozen (no LoRA, not fine-tuned), caption embeddings are cached: MiniLM is
the expensive part and most captions recur across pairs and epochs.

Dense (`dense=True`): a score per word of the caption (split on whitespace, as marks count words) plus one for the
caption as a whole (the end: what no word carries, e.g. a shape left out), which sum to the reward. A word reads its
own text-encoder states (the mean of its word pieces), the image, and the image tokens it attends to. Marks train
the words (reward_model/losses.py `marks_loss`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reward_model import backbones
from reward_model.base import RewardModel, RewardModelConfig
from vrlhf.errors import ConfigError

CACHE_LIMIT = 200_000  # cached caption embeddings before the cache is cleared


def _width(config) -> int:
    if getattr(config, "model_type", "") == "clip":
        return config.projection_dim
    return getattr(config, "hidden_size", None) or config.hidden_sizes[-1]


class CaptionRewardModel(RewardModel):
    """Scores captions of an image: the reward model of tasks whose outputs are text."""

    def __init__(self, cfg: RewardModelConfig, pretrained: bool, tokenizer_dir=None):
        super().__init__(cfg)
        c = cfg
        if c.clip:
            self.clip = backbones.build(c.vision_config, weights_from=c.clip if pretrained else None)
            if pretrained:
                c.vision_config = self.clip.config.to_dict()
                c.image_size = self.clip.config.vision_config.image_size
                c.image_mean, c.image_std = backbones.image_stats(c.clip)
            c.image_channels = 3
            d_img = d_txt = self.clip.config.projection_dim
        else:
            if pretrained:
                c.vision_config = (backbones.config_dict(c.image_encoder) if c.image_encoder else
                                   backbones.tiny_config(c.encoder, c.image_size, c.patch_size, 3, c.vit_hidden,
                                                        c.vit_layers))
                c.image_mean, c.image_std = backbones.image_stats(c.image_encoder or None)
                c.image_size = c.vision_config.get("image_size", c.image_size)
            c.image_channels = c.vision_config.get("num_channels", 3)
            self.vision = backbones.build(c.vision_config, weights_from=c.image_encoder if pretrained and
                                          c.image_encoder else None)
            minilm = c.text_encoder == backbones.MINILM
            if pretrained:
                c.text_config = backbones.config_dict(backbones.minilm_path() if minilm else c.text_encoder)
            # The bundled MiniLM always loads from its package; other encoders from the saved weights.
            source = backbones.minilm_path() if minilm else (c.text_encoder if pretrained else None)
            self.text = backbones.build(c.text_config, weights_from=source)
            d_img, d_txt = _width(self.vision.config), _width(self.text.config)
        self.tokenizer = backbones.load_tokenizer(tokenizer_dir or c.clip or c.text_encoder)
        self.text_frozen = c.lora_r == 0 and not c.train_text_encoder
        towers = [self.clip] if c.clip else [self.vision, self.text]
        if c.lora_r:
            for tower in towers:
                backbones.add_lora(tower, c.lora_r, c.lora_alpha, c.lora_dropout, c.lora_targets)
        elif self.text_frozen:
            for p in (self.clip.text_model.parameters() if c.clip else self.text.parameters()):
                p.requires_grad_(False)
            if c.clip:
                self.clip.text_projection.requires_grad_(False)
        h = c.hidden_size
        self.img_proj = nn.Sequential(nn.Linear(d_img, h), nn.LayerNorm(h))
        self.txt_proj = nn.Sequential(nn.Linear(d_txt, h), nn.LayerNorm(h))
        self.attend = nn.MultiheadAttention(h, num_heads=4 if h % 4 == 0 else 1, batch_first=True)
        self.head = nn.Sequential(nn.Linear(4 * h, h), nn.GELU(), nn.Linear(h, 1))
        self._cache: dict[str, torch.Tensor] = {}
        if c.dense:
            if c.clip:
                raise ConfigError("a dense caption reward reads its text encoder's word pieces: use --text-encoder, "
                                  "not --clip")
            self.word_proj = nn.Sequential(nn.Linear(d_txt, h), nn.LayerNorm(h))
            self.word_head = nn.Sequential(nn.Linear(5 * h, h), nn.GELU(), nn.Linear(h, 1))
            self._word_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def build(cls, cfg: RewardModelConfig) -> CaptionRewardModel:
        return cls(cfg, pretrained=True)

    @classmethod
    def from_config(cls, cfg: RewardModelConfig, tokenizer_dir=None) -> CaptionRewardModel:
        return cls(cfg, pretrained=False, tokenizer_dir=tokenizer_dir)

    # -- encoders ------------------------------------------------------------------------------------
    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image tokens [B, N, d_img] (CLIP: its one projected image embedding, N = 1)."""
        if self.cfg.clip:
            return self.clip.get_image_features(pixel_values=pixel_values).pooler_output.unsqueeze(1)
        return backbones.image_tokens(self.vision, pixel_values)

    def _text_features(self, captions: list[str]) -> torch.Tensor:
        device = self.img_proj[0].weight.device
        limit = min(64, self.tokenizer.model_max_length)
        if self.cfg.clip:
            limit = min(limit, self.clip.config.text_config.max_position_embeddings)
        tok = self.tokenizer(captions, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)
        if self.cfg.clip:
            return self.clip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        return backbones.pool_text(self.text, ids, mask)

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        if not self.text_frozen:
            return self._text_features(captions)
        new = list(dict.fromkeys(c for c in captions if c not in self._cache))
        if len(self._cache) + len(new) > CACHE_LIMIT:
            self._cache.clear()
            new = list(dict.fromkeys(captions))
        with torch.no_grad():
            for i in range(0, len(new), 256):
                feats = self._text_features(new[i : i + 256]).float().cpu()
                self._cache.update(zip(new[i : i + 256], feats))
        return torch.stack([self._cache[c] for c in captions]).to(self.img_proj[0].weight.device)

    def _word_features(self, captions: list[str]) -> list[torch.Tensor]:
        """Per caption [n_words, d_txt]: each whitespace word's mean word-piece state (zeros past the truncation)."""
        device = self.img_proj[0].weight.device
        words = [c.split() for c in captions]
        tok = self.tokenizer([w or [""] for w in words], is_split_into_words=True, padding=True, truncation=True,
                             max_length=min(64, self.tokenizer.model_max_length), return_tensors="pt")
        hidden = self.text(input_ids=tok["input_ids"].to(device),
                           attention_mask=tok["attention_mask"].to(device)).last_hidden_state  # [N, L, d]
        out = []
        for i, ws in enumerate(words):
            pieces = torch.zeros(len(ws), hidden.shape[1], device=device)  # [n_words, L]: which pieces are whose
            for position, word in enumerate(tok.word_ids(i)):
                if word is not None and word < len(ws):
                    pieces[word, position] = 1.0
            out.append(pieces @ hidden[i] / pieces.sum(1, keepdim=True).clamp(min=1.0))
        return out

    def encode_words(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """([N, W, d_txt] word features, [N, W] bool: a word there), W the most words of these captions."""
        if self.text_frozen:
            new = list(dict.fromkeys(c for c in captions if c not in self._word_cache))
            if len(self._word_cache) + len(new) > CACHE_LIMIT:
                self._word_cache.clear()
                new = list(dict.fromkeys(captions))
            with torch.no_grad():
                for i in range(0, len(new), 256):
                    feats = self._word_features(new[i : i + 256])
                    self._word_cache.update(zip(new[i : i + 256], (f.float().cpu() for f in feats)))
            feats = [self._word_cache[c] for c in captions]
        else:
            feats = self._word_features(captions)
        device = self.img_proj[0].weight.device
        width = max(1, max(len(f) for f in feats))
        valid = torch.tensor([[j < len(f) for j in range(width)] for f in feats], device=device)
        padded = torch.stack([F.pad(f.to(device), (0, 0, 0, width - len(f))) for f in feats])
        return padded, valid

    # -- scoring -------------------------------------------------------------------------------------
    def inputs(self, rows: list[dict], outputs: list[str]) -> dict:
        return {"pixel_values": self.pixels([r["image"] for r in rows]), "captions": [str(o) for o in outputs]}

    def forward(self, pixel_values: torch.Tensor, captions: list[str], dense: bool = False):
        """Rewards [B*k] for `captions` (image-major, k per image) of the B images in `pixel_values`. A dense model's
        reward is the sum of its words' scores and the end's; with `dense`: (rewards [B*k], regions [B*k, W + 1]: the
        words' scores, zero past a caption's end, then the end's score, valid [B*k, W + 1]: True on real words)."""
        batch = pixel_values.shape[0]
        k = len(captions) // batch
        tokens = self.img_proj(self.encode_image(pixel_values))  # [B, N, h]
        txt = self.txt_proj(self.encode_text(captions).to(tokens.dtype))  # [B*k, h]
        img = tokens.mean(dim=1).repeat_interleave(k, dim=0)  # [B*k, h]
        att = self._attend_per_image(txt.view(batch, k, -1), tokens).reshape(batch * k, -1)
        end = self.head(torch.cat([img, txt, img * txt, att * txt], dim=-1)).squeeze(-1)  # [B*k]
        if not self.cfg.dense:
            if dense:
                raise ValueError("this reward model is not dense: it has no word scores (train it with --dense)")
            return end
        feats, valid = self.encode_words(captions)
        words = self.word_proj(feats.to(tokens.dtype))  # [B*k, W, h]
        n_words = words.shape[1]
        seen = self._attend_per_image(words.reshape(batch, k * n_words, -1), tokens).reshape_as(words)
        per_word = img[:, None].expand_as(words)
        scores = self.word_head(torch.cat([per_word, words, per_word * words, seen * words,
                                           txt[:, None].expand_as(words)], dim=-1)).squeeze(-1) * valid  # [B*k, W]
        reward = scores.sum(dim=1) + end
        if not dense:
            return reward
        ends = torch.zeros_like(valid[:, :1])  # the end is a region of the reward, not a word anyone marks
        return reward, torch.cat([scores, end[:, None]], dim=1), torch.cat([valid, ends], dim=1)

    def dense_scores(self, pixel_values: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """[B*k, 1 + W]: the end's score first, then each word's (zero past a caption's end); they sum to the reward.
        (The end first, so that captions of different lengths pad alike.)"""
        regions = self(pixel_values, captions, dense=True)[1]
        return torch.cat([regions[:, -1:], regions[:, :-1]], dim=1)

    def output_regions(self, rows: list[dict], outputs: list) -> list:
        """Per caption an array of its words' scores then the end's, in the caption oracle's `regions` layout (the
        words of `caption_oracle.words`, letter runs, which `captioning.token_rewards` reads): a whitespace word's score
        is split evenly over its letter runs; one without letters ("2") adds to the end. Each sums to the reward."""
        from vrlhf.tasks.caption_oracle import words

        out = []
        for d, caption in zip(self.score_dense(rows, outputs).numpy(), outputs):
            values, end = [], d[0]
            for score, word in zip(d[1:], str(caption).split()):
                runs = words(word)
                if runs:
                    values += [score / len(runs)] * len(runs)
                else:
                    end += score
            out.append(np.array([*values, end], dtype=np.float32))
        return out

    def _attend_per_image(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """`self.attend` (nn.MultiheadAttention) with the k captions of an image as queries over its N tokens:
        [B, k, h] × [B, N, h] -> [B, k, h]. The same numbers as calling it per caption, but each image's keys and
        values are projected once, not k times (the in-batch contrastive term scores every caption on every image)."""
        mha = self.attend
        heads, width = mha.num_heads, queries.shape[-1]
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
        b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
        split = lambda x: x.view(*x.shape[:2], heads, width // heads).transpose(1, 2)  # noqa: E731  [B, H, L, d]
        q = split(F.linear(queries, w_q, b_q))
        keys, values = split(F.linear(tokens, w_k, b_k)), split(F.linear(tokens, w_v, b_v))
        out = F.scaled_dot_product_attention(q, keys, values)  # [B, H, k, d]
        return mha.out_proj(out.transpose(1, 2).reshape(*queries.shape))
