"""Pure, batched metrics used as rewards and for evaluation: CIDEr-D, BLEU, colourfulness, colour fidelity."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import chain, compress, count, repeat
from typing import NamedTuple

import numpy as np
from PIL import Image
from skimage.color import rgb2hsv, rgb2lab

NGram = tuple[str, ...]
Images = np.ndarray | Sequence[Image.Image | np.ndarray]  # [N,H,W,3] uint8, or a list of RGB images

# ---------------------------------------------------------------------------------------------- text

_PUNCT = re.compile(r"[^\w\s]|_")


def tokenize(text: str) -> str:
    """Lowercase, turn every punctuation character into a space, collapse whitespace.

    A Java-free stand-in for pycocoevalcap's PTBTokenizer: "A man's T-shirt." -> "a man s t shirt"
    (PTB would give "a man 's t-shirt"). Apply the same function to candidates and references.
    """
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def _ngrams(sentence: str, n: int) -> Counter[NGram]:
    """Counts of all 1..n-grams of a sentence as tuples of words (pycocoevalcap's `precook`)."""
    w = sentence.split()
    return Counter(chain.from_iterable(zip(*(w[i:] for i in range(k))) for k in range(1, n + 1)))


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over a list of texts (0.0 when there are none)."""
    grams = [tuple(w[i : i + n]) for t in texts for w in [t.split()] for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


# ---------------------------------------------------------------------------------------------- CIDEr-D
# Hot path of the captioning reward. N-grams are packed into uint64 codes, 16 bits a word id (0 = no word),
# so that counting, idf look-up and matching against the references are numpy sorts and searches; the only
# Python-level loop is one dict look-up per word.

_BITS = 16


def _pad_refs(a: np.ndarray, r: int) -> np.ndarray:
    """Zero-pad the last (reference) axis to r; padded references have norm 0 and add nothing."""
    return a if a.shape[-1] == r else np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, r - a.shape[-1])])


class _Counts(NamedTuple):
    """Sparse n-gram counts of a batch of sentences."""

    codes: np.ndarray  # uint64 [U] sorted distinct n-gram codes
    owner: np.ndarray  # int64 [E] sentence of each entry (entries sorted by sentence)
    gram: np.ndarray  # int64 [E] index into codes
    tf: np.ndarray  # float64 [E] count of the n-gram in the sentence
    lengths: np.ndarray  # float64 [B] CIDEr's "length": the number of bigrams (see CiderD)


class _RefSet(NamedTuple):
    """One image's cached references: its distinct n-gram codes and their tf-idf in each reference."""

    codes: np.ndarray  # uint64 [U] sorted
    vals: np.ndarray  # float64 [U, R]
    norms: np.ndarray  # float64 [n, R]
    lengths: np.ndarray  # float64 [R]


class CiderD:
    """CIDEr-D exactly as pycocoevalcap's `CiderScorer` (n = 1..4, sigma = 6), with a fixed document frequency.

    Build it once from the training references (`CiderD(train_references)`) or from saved statistics
    (`CiderD(document_frequency=df, num_docs=N)`); idf = log(N) - log(max(1, df)). `score` caches each
    image's reference vectors (keyed by the tuple of reference strings), so scoring k samples of the same
    images every step only costs the candidates.

    Inputs are tokenised text (see `tokenize`); candidates must already be cut at their first EOS.
    Quirk kept for parity: the "length" in the Gaussian penalty is the number of *bigrams*
    (max(0, words - 1)). Length differences equal word-count differences except against an empty
    sentence, whose similarity is 0 anyway; it only matters for n = 1 (no penalty at all).
    Limit: at most 65535 distinct words in the df corpus, the cached references and one batch together.
    """

    def __init__(
        self,
        train_references: Sequence[Sequence[str]] | None = None,
        *,
        document_frequency: dict[NGram, float] | None = None,
        num_docs: int | None = None,
        n: int = 4,
        sigma: float = 6.0,
    ):
        if not 1 <= n <= 64 // _BITS:
            raise ValueError(f"n = {n}: n-grams are packed {_BITS} bits a word into a uint64")
        self.n, self.sigma = n, sigma
        self._words: dict[str, int] = {}  # word -> id >= 1, grows with the df corpus and cached references
        self._cache: dict[tuple[str, ...], _RefSet] = {}
        if train_references is not None:
            num_docs = len(train_references)
            self._df_codes, self._df = self._count_documents(train_references)  # uint64 [D] sorted, float64 [D]
        elif document_frequency is not None and num_docs is not None:
            codes = np.array([self._pack(g) for g in document_frequency], np.uint64)
            sort = np.argsort(codes)
            self._df_codes = codes[sort]
            self._df = np.fromiter(document_frequency.values(), np.float64, len(codes))[sort]
        else:
            raise ValueError("give train_references, or document_frequency and num_docs")
        if num_docs < 1:
            raise ValueError("the document frequency needs at least one document")
        self.num_docs = num_docs
        self._log_n = np.log(float(num_docs))

    @property
    def document_frequency(self) -> dict[NGram, float]:
        """n-gram (tuple of words) -> number of documents containing it; with `num_docs`, enough to rebuild."""
        words, mask = [""] + list(self._words), (1 << _BITS) - 1  # id -> word

        def unpack(code: int) -> NGram:
            return tuple(words[(code >> (_BITS * t)) & mask] for t in range(self.n) if code >> (_BITS * t))

        return dict(zip(map(unpack, self._df_codes.tolist()), self._df.tolist()))

    @property
    def cache_size(self) -> int:
        """Number of distinct reference lists whose vectors are cached."""
        return len(self._cache)

    def _pack(self, gram: NGram) -> int:
        ids = [self._words.setdefault(w, len(self._words) + 1) for w in gram]
        if len(self._words) >= 1 << _BITS:
            raise ValueError(f"more than {(1 << _BITS) - 1} distinct words")
        return sum(i << (_BITS * t) for t, i in enumerate(ids))

    def _encode(self, sentences: Sequence[str], grow: bool) -> _Counts:
        """Count the 1..n-grams of each sentence. New words join the vocabulary only if `grow`
        (references); a candidate's unseen words get ids for this call alone, as they match nothing."""
        splits = [s.split() for s in sentences]
        words = list(chain.from_iterable(splits))
        ids = np.fromiter(map(self._words.get, words, repeat(0)), np.uint64, len(words))  # [W]
        if not ids.all():
            unseen = ids == 0
            vocab = self._words if grow else {}
            vocab.update(zip(dict.fromkeys(compress(words, unseen)), count(len(self._words) + 1)))
            ids[unseen] = np.fromiter(map(vocab.__getitem__, compress(words, unseen)), np.uint64, unseen.sum())
            if ids.max() >= 1 << _BITS:
                raise ValueError(f"more than {(1 << _BITS) - 1} distinct words")
        n_words = np.fromiter(map(len, splits), np.int64, len(splits))  # [B]
        sentence = np.repeat(np.arange(len(splits)), n_words)  # [W]
        room = np.repeat(np.cumsum(n_words), n_words) - np.arange(len(words))  # [W] words left in the sentence
        padded = np.concatenate([ids, np.zeros(self.n, np.uint64)])
        code, owners, codes = np.zeros(len(words), np.uint64), [], []
        for k in range(self.n):  # code of the (k+1)-gram starting at each word
            code |= padded[k : k + len(words)] << np.uint64(_BITS * k)
            owners.append(sentence[room > k])
            codes.append(code[room > k])
        uniq, inv = np.unique(np.concatenate(codes), return_inverse=True)
        u = max(1, len(uniq))
        key, tf = np.unique(np.concatenate(owners) * u + inv, return_counts=True)  # sorted by sentence
        lengths = np.maximum(0, n_words - 1) if self.n >= 2 else np.zeros(len(splits))
        return _Counts(uniq, key // u, key % u, tf.astype(np.float64), lengths.astype(np.float64))

    def _count_documents(self, references: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Document frequency over images: (sorted codes uint64 [D], counts float64 [D])."""
        c = self._encode([r for refs in references for r in refs], grow=True)
        image = np.repeat(np.arange(len(references)), [len(refs) for refs in references])  # [sentences]
        u = max(1, len(c.codes))
        pairs = np.sort(image[c.owner] * u + c.gram)  # (image, n-gram); np.unique alone is slower (hashing)
        present = pairs[np.diff(pairs, prepend=-1) != 0]  # distinct pairs
        return c.codes, np.bincount(present % u, minlength=len(c.codes)).astype(np.float64)

    def _order_idf(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Order (n - 1) and idf = log N - log max(1, df) of each code: int64 [U], float64 [U]."""
        order = np.zeros(len(codes), np.int64)
        for t in range(1, self.n):
            order += codes >> np.uint64(_BITS * t) != 0  # word t present
        df = np.zeros(len(codes))
        if len(self._df_codes):
            pos = np.minimum(np.searchsorted(self._df_codes, codes), len(self._df_codes) - 1)
            hit = self._df_codes[pos] == codes
            df[hit] = self._df[pos[hit]]
        return order, self._log_n - np.log(np.maximum(1.0, df))

    def _ref_set(self, refs: tuple[str, ...]) -> _RefSet:
        if (cached := self._cache.get(refs)) is not None:
            return cached
        c = self._encode(refs, grow=True)
        order, idf = self._order_idf(c.codes)
        vals = c.tf * idf[c.gram]  # [E]
        dense = np.zeros((len(c.codes), len(refs)))  # [U, R]
        dense[c.gram, c.owner] = vals
        norms = np.sqrt(np.bincount(order[c.gram] * len(refs) + c.owner, vals**2, self.n * len(refs)))
        self._cache[refs] = rs = _RefSet(c.codes, dense, norms.reshape(self.n, len(refs)), c.lengths)
        return rs

    def score(self, candidates: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
        """CIDEr-D of each candidate against its references: float64 [len(candidates)].

        Candidates are scored as given, i.e. the caller cuts each one at its first EOS.
        """
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates but {len(references)} reference lists")
        B, n = len(candidates), self.n
        if B == 0:
            return np.zeros(0)
        if any(len(r) == 0 for r in references):
            raise ValueError("every candidate needs at least one reference")

        # References: the distinct images of this batch (cached first: they may add words to the vocabulary).
        slot: dict[tuple[str, ...], int] = {}
        which = np.array([slot.setdefault(tuple(r), len(slot)) for r in references])  # [B] image slot
        sets = [self._ref_set(k) for k in slot]
        R = max(len(s.lengths) for s in sets)  # references are zero-padded to R
        n_refs = np.array([len(s.lengths) for s in sets])  # [S]
        ref_codes = np.concatenate([s.codes for s in sets])  # [K]
        table = np.concatenate([_pad_refs(s.vals, R) for s in sets])  # [K, R]
        ref_norms = np.stack([_pad_refs(s.norms, R) for s in sets])  # [S, n, R]
        ref_lengths = np.stack([_pad_refs(s.lengths, R) for s in sets])  # [S, R]

        # Candidates: tf-idf entries (candidate, n-gram) and norms.
        c = self._encode(candidates, grow=False)
        order, idf = self._order_idf(c.codes)
        order, vals = order[c.gram], c.tf * idf[c.gram]  # [G]
        cand_norms = np.sqrt(np.bincount(c.owner * n + order, vals**2, B * n)).reshape(B, n)

        # Look each entry up in its image's references: rank all codes together so that (slot, rank) packs
        # into one int64 key, sorted for the references since each image's codes are sorted.
        _, rank = np.unique(np.concatenate([ref_codes, c.codes]), return_inverse=True)
        keys = (np.repeat(np.arange(len(sets)), [len(s.codes) for s in sets]) << 32) + rank[: len(ref_codes)]
        query = (which[c.owner] << 32) + rank[len(ref_codes) :][c.gram]  # [G]
        v_ref = np.zeros((len(query), R))  # [G, R] the entry's n-gram weight in each reference
        if len(keys):
            pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
            hit = keys[pos] == query
            v_ref[hit] = table[pos[hit]]

        # Clipped dot product sum min(v_hyp, v_ref) * v_ref per (candidate, order, reference), then cosine.
        clipped = np.minimum(vals[:, None], v_ref) * v_ref  # [G, R]
        cell = (c.owner * n + order)[:, None] * R + np.arange(R)  # [G, R]
        dot = np.bincount(cell.ravel(), clipped.ravel(), B * n * R).astype(np.float64).reshape(B, n, R)
        denom = cand_norms[:, :, None] * ref_norms[which]  # [B, n, R]
        cos = np.divide(dot, denom, out=dot, where=denom != 0)  # pycocoevalcap skips the division at 0
        delta = c.lengths[:, None] - ref_lengths[which]  # [B, R]
        sim = cos * np.exp(-(delta**2) / (2 * self.sigma**2))[:, None, :]  # [B, n, R]
        return sim.sum(2).mean(1) / n_refs[which] * 10.0  # sum over refs, mean over n, mean over refs


def document_frequencies(references: Sequence[Sequence[str]], n: int = 4) -> dict[NGram, float]:
    """For each n-gram, the number of images (reference lists) in which any reference contains it."""
    return CiderD(references, n=n).document_frequency


def cider_d(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    document_frequency: dict[NGram, float] | None = None,
    num_docs: int | None = None,
) -> np.ndarray:
    """CIDEr-D per candidate: float64 [len(candidates)]; candidates cut at their first EOS by the caller.

    Without `document_frequency`, df and N come from `references` themselves, one document per entry,
    exactly as pycocoevalcap's `Cider().compute_score` on a test set. Otherwise give `num_docs` too.
    """
    if document_frequency is None:
        return CiderD(references).score(candidates, references)
    return CiderD(document_frequency=document_frequency, num_docs=num_docs).score(candidates, references)


# ---------------------------------------------------------------------------------------------- BLEU


def _bleu_stats(candidates: Sequence[str], references: Sequence[Sequence[str]], n: int) -> np.ndarray:
    """Per candidate [testlen, closest reflen, guess_1..n, correct_1..n] as pycocoevalcap's BleuScorer: [B, 2+2n]."""
    rows = []
    for cand, refs in zip(candidates, references, strict=True):
        maxref: dict[NGram, int] = {}
        for r in refs:
            for g, c in _ngrams(r, n).items():
                maxref[g] = max(maxref.get(g, 0), c)
        testlen = len(cand.split())
        reflen = min((abs(len(r.split()) - testlen), len(r.split())) for r in refs)[1]  # ties -> shorter
        correct = [0] * n
        for g, c in _ngrams(cand, n).items():
            correct[len(g) - 1] += min(maxref.get(g, 0), c)
        rows.append([testlen, reflen, *(max(0, testlen - k) for k in range(n)), *correct])
    return np.array(rows, np.float64).reshape(-1, 2 + 2 * n)


def _bleu_from_stats(testlen, reflen, guess, correct, n: int) -> np.ndarray:
    """BLEU-n with pycocoevalcap's epsilons (1e-15 / 1e-9) and brevity penalty; works per row or on sums."""
    precision = np.cumprod((correct + 1e-15) / (guess + 1e-9), axis=-1)[..., n - 1]
    ratio = (testlen + 1e-15) / (reflen + 1e-9)
    return precision ** (1.0 / n) * np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)


def bleu(candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4) -> np.ndarray:
    """Sentence BLEU-n per candidate, equal to pycocoevalcap's per-image `Bleu(4)` scores: float64 [B].

    Only pycocoevalcap's epsilon smoothing: a candidate without any matching n-gram scores about 0.
    """
    s = _bleu_stats(candidates, references, n)
    return _bleu_from_stats(s[:, 0], s[:, 1], s[:, 2 : 2 + n], s[:, 2 + n :], n)


def bleu4_corpus(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 (clipped counts and lengths summed over the corpus), equal to pycocoevalcap's `Bleu(4)`."""
    s = _bleu_stats(candidates, references, 4).sum(0)
    return float(_bleu_from_stats(s[0], s[1], s[2:6], s[6:], 4))


# ---------------------------------------------------------------------------------------------- images


def _as_rgb(images: Images) -> np.ndarray | list[np.ndarray]:
    """A stacked uint8 batch [N,H,W,3] when all images share a size, else a list of [1,H,W,3] batches."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected a uint8 batch [N,H,W,3], got {images.dtype} {images.shape}")
        return images
    arrays = [np.asarray(im.convert("RGB")) if isinstance(im, Image.Image) else np.asarray(im) for im in images]
    for a in arrays:
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] != 3:
            raise ValueError(f"expected uint8 RGB images [H,W,3], got {a.dtype} {a.shape}")  # no silent 0..1 floats
    if arrays and all(a.shape == arrays[0].shape for a in arrays):
        return np.stack(arrays)
    return [a[None] for a in arrays]


def _per_image(fn: Callable[..., np.ndarray], *image_sets: Images) -> np.ndarray:
    """Apply a batched fn([N,H,W,3] uint8, ...) -> [N]; images of mixed sizes go one at a time."""
    batches = [_as_rgb(s) for s in image_sets]
    if len({len(b) for b in batches}) > 1:
        raise ValueError(f"image lists differ in length: {[len(b) for b in batches]}")
    if len(batches[0]) == 0:
        return np.zeros(0)
    if all(isinstance(b, np.ndarray) for b in batches) and len({b.shape for b in batches}) == 1:
        return fn(*batches)
    singles = [[x[None] for x in b] if isinstance(b, np.ndarray) else b for b in batches]
    for xs in zip(*singles):
        if len({x.shape for x in xs}) > 1:
            raise ValueError(f"paired images differ in shape: {[x.shape for x in xs]}")
    return np.concatenate([fn(*xs) for xs in zip(*singles)])


def _colorfulness(x: np.ndarray) -> np.ndarray:
    rgb = x.astype(np.float64)
    rg = rgb[..., 0] - rgb[..., 1]  # [N,H,W]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    axes = (1, 2)
    return np.sqrt(rg.var(axes) + yb.var(axes)) + 0.3 * np.sqrt(rg.mean(axes) ** 2 + yb.mean(axes) ** 2)


def colorfulness(images: Images) -> np.ndarray:
    """Hasler & Suesstrunk (2003) colourfulness per image on 0..255 RGB (population std): float64 [N].

    M = sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2), rg = R - G, yb = (R + G) / 2 - B.
    """
    return _per_image(_colorfulness, images)


def _ab_error(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    return np.abs(rgb2lab(pred)[..., 1:] - rgb2lab(true)[..., 1:]).mean((1, 2, 3))


def ab_error(pred_rgb: Images, true_rgb: Images) -> np.ndarray:
    """Mean |a - a'| and |b - b'| over pixels and both chroma channels of CIE Lab, per image: float64 [N]."""
    return _per_image(_ab_error, pred_rgb, true_rgb)


def _psnr(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    mse = ((pred.astype(np.float64) - true.astype(np.float64)) ** 2).mean((1, 2, 3))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0**2 / mse)


def psnr(pred_rgb: Images, true_rgb: Images) -> np.ndarray:
    """PSNR in dB on 0..255 RGB per image (inf for identical images): float64 [N]."""
    return _per_image(_psnr, pred_rgb, true_rgb)


def saturation(images: Images) -> np.ndarray:
    """Mean HSV saturation (0..1) per image, to spot over-saturated colourizations: float64 [N]."""
    return _per_image(lambda x: rgb2hsv(x)[..., 1].mean((1, 2)), images)


__all__ = [
    "CiderD",
    "ab_error",
    "bleu",
    "bleu4_corpus",
    "cider_d",
    "colorfulness",
    "distinct_n",
    "document_frequencies",
    "psnr",
    "saturation",
    "tokenize",
]
