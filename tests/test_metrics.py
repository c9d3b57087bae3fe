"""vrlhf.metrics against pycocoevalcap (CIDEr-D, BLEU) and against hand-computed image and text values."""

import random
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import CiderScorer

from vrlhf.metrics import (
    CiderD,
    ab_error,
    bleu,
    bleu4_corpus,
    cider_d,
    colorfulness,
    distinct_n,
    document_frequencies,
    psnr,
    saturation,
    tokenize,
)

COLOURS = ["red", "green", "blue", "yellow", "white", "black"]
NOUNS = ["dog", "cat", "man", "woman", "bus", "ball", "table", "horse"]
VERBS = ["sits on", "stands near", "runs across", "looks at", "is next to"]
PLACES = ["the grass", "a street", "the beach", "a table", "the snow"]


def _sentence(rng: random.Random, noun: str, colour: str) -> str:
    parts = [rng.choice(["a", "the", "one"]), colour if rng.random() < 0.7 else rng.choice(COLOURS), noun]
    parts += [rng.choice(VERBS), rng.choice(PLACES)]
    if rng.random() < 0.4:
        parts += ["with", "a", rng.choice(COLOURS), rng.choice(NOUNS)]
    return " ".join(parts)


def _corpus(n_images: int, seed: int) -> list[list[str]]:
    """n_images reference lists of 5 captions sharing a subject, so that n-grams overlap within and across."""
    rng = random.Random(seed)
    refs = []
    for _ in range(n_images):
        noun, colour = rng.choice(NOUNS), rng.choice(COLOURS)
        refs.append([_sentence(rng, noun, colour) for _ in range(5)])
    return refs


REFS = _corpus(24, seed=0)
REFS[1] = ["dog"] + REFS[1][1:]  # one-word reference: the bigram-length quirk
REFS[2] = [REFS[2][0]] * 5  # identical references
REFS[3][0] = "a dog dog dog sits sits on the the grass"  # repeated words in a reference
REFS[10][1] = "a zeppelin floats over the beach"  # words no training corpus has; CANDS[10] copies its start


def _candidates(refs: list[list[str]]) -> list[str]:
    rng = random.Random(1)
    w = [r[0].split() for r in refs]
    odd = ["", "dog", w[2][2], " ".join([w[3][2]] * 4), "zebra xylophone quartz", " ".join(w[5][:2] * 4 + [w[5][2]]),
           " ".join(w[6] * 3), "the the the", " ".join(w[8][::-1])]  # empty, one word, repeats, OOV, long, shuffled
    out = []
    for i, r in enumerate(refs):
        if i < len(odd):
            out.append(odd[i])
        elif i % 3 == 0:
            out.append(r[0])  # exact copy of a reference
        elif i % 3 == 1:
            out.append(" ".join(r[1].split()[: rng.randint(2, 5)]))  # truncated reference
        else:
            out.append(_sentence(rng, rng.choice(NOUNS), rng.choice(COLOURS)))
    return out


CANDS = _candidates(REFS)


def _coco_cider(cands: list[str], refs: list[list[str]]) -> np.ndarray:
    _, scores = Cider().compute_score({i: r for i, r in enumerate(refs)}, {i: [c] for i, c in enumerate(cands)})
    return np.asarray(scores)


def _coco_cider_with_df(cands: list[str], refs: list[list[str]], train: list[list[str]]) -> np.ndarray:
    """pycocoevalcap's own CiderScorer with a training df: its compute_cider sets ref_len = log(len(crefs)),
    so pad the scorer with empty (candidate, [reference]) entries up to len(train) and read the first scores."""
    df_scorer = CiderScorer()
    for r in train:
        df_scorer += ("", r)
    df_scorer.compute_doc_freq()
    scorer = CiderScorer()
    for c, r in zip(cands, refs):
        scorer += (c, r)
    while len(scorer.crefs) < len(train):
        scorer.ctest.append(defaultdict(int))
        scorer.crefs.append([defaultdict(int)])
    scorer.document_frequency = defaultdict(float, df_scorer.document_frequency)
    return np.asarray(scorer.compute_cider()[: len(cands)])


def test_cider_d_matches_pycocoevalcap_on_test_df():
    ours, theirs = cider_d(CANDS, REFS), _coco_cider(CANDS, REFS)
    assert ours.dtype == np.float64 and ours.shape == (len(CANDS),)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    assert ours[0] == 0.0 and theirs.max() > 1.0  # empty candidate scores 0; copies score well
    assert len(set(np.round(theirs, 6))) > 15  # the corpus really exercises varied scores


def test_cider_d_matches_pycocoevalcap_with_training_df():
    train = _corpus(60, seed=2) + REFS[:5]
    scorer = CiderD(train)
    assert scorer.num_docs == 65
    ours, theirs = scorer.score(CANDS, REFS), _coco_cider_with_df(CANDS, REFS, train)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    assert not np.allclose(ours, cider_d(CANDS, REFS))  # the df really matters
    # The saved-statistics constructor and the functional form agree with it.
    same = CiderD(document_frequency=document_frequencies(train), num_docs=len(train)).score(CANDS, REFS)
    np.testing.assert_array_equal(same, ours)
    np.testing.assert_array_equal(cider_d(CANDS, REFS, scorer.document_frequency, len(train)), ours)


def test_document_frequencies_and_sigma_match_pycocoevalcap():
    scorer = CiderScorer()
    for r in REFS:
        scorer += ("", r)
    scorer.compute_doc_freq()
    assert document_frequencies(REFS) == dict(scorer.document_frequency)
    # Another sigma (pycocoevalcap's n != 4 crashes: its cook_refs ignores n).
    gts, res = {i: r for i, r in enumerate(REFS)}, {i: [c] for i, c in enumerate(CANDS)}
    theirs = np.asarray(Cider(sigma=3.0).compute_score(gts, res)[1])
    np.testing.assert_allclose(CiderD(REFS, sigma=3.0).score(CANDS, REFS), theirs, rtol=0, atol=1e-9)


def test_cider_d_candidates_do_not_grow_state():
    scorer = CiderD(REFS)
    scorer.score(CANDS, REFS)
    words, cached = len(scorer._words), scorer.cache_size
    fresh = [f"novel{i} dog novel{i} novel{i}" for i in range(len(REFS))]  # unseen, repeated words
    np.testing.assert_allclose(scorer.score(fresh, REFS), _coco_cider_with_df(fresh, REFS, REFS), atol=1e-9)
    assert (len(scorer._words), scorer.cache_size) == (words, cached)
    with pytest.raises(ValueError, match="distinct words"):
        scorer.score([" ".join(f"w{i}" for i in range(70_000))], [REFS[0]])


def test_cider_d_hand_computed():
    # N = 2 docs; df(a) = 2 -> idf 0; b, "a b" and unseen n-grams -> idf log 2 =: L.
    scorer = CiderD([["a b"], ["a"]])
    # "b" vs "b": unigram cosine 1, higher orders empty (norm 0 -> 0), lengths equal -> 10 * 1 / 4.
    np.testing.assert_allclose(scorer.score(["b"], [["b"]]), [2.5], atol=1e-12)
    # "a" vs "a": both vectors are 0 (idf 0), pycocoevalcap skips the division -> 0, not nan.
    np.testing.assert_array_equal(scorer.score(["a"], [["a"]]), [0.0])
    # "b x y" vs "b": unigram cos = L^2 / (sqrt(3) L * L); bigram lengths 2 vs 0 -> exp(-4 / 72).
    np.testing.assert_allclose(scorer.score(["b x y"], [["b"]]), [10 * np.exp(-4 / 72) / np.sqrt(3) / 4], atol=1e-12)
    # Clipping: "b b" vs "b": min(2L, L) * L / (2L * L) = 1/2 on unigrams; mean over 2 refs ("b", "a").
    np.testing.assert_allclose(scorer.score(["b b"], [["b", "a"]]), [10 * (0.5 * np.exp(-1 / 72) + 0) / 4 / 2])


def test_cider_d_k_samples_per_image_cache_and_batch_independence():
    scorer = CiderD(REFS)
    k = 3
    refs = [r for r in REFS for _ in range(k)]  # image-major, k samples per image
    cands = [c if j == 0 else f"{c} dog" for c in CANDS for j in range(k)]
    first = scorer.score(cands, refs)
    assert scorer.cache_size == len({tuple(r) for r in REFS})  # one entry per distinct image
    cached = scorer._cache[tuple(REFS[5])]
    second = scorer.score(cands, refs)
    np.testing.assert_array_equal(first, second)
    assert scorer.cache_size == len({tuple(r) for r in REFS}) and scorer._cache[tuple(REFS[5])] is cached
    # Each score depends only on its own (candidate, references): equal to scoring one at a time, reversed.
    alone = np.array([scorer.score([c], [r])[0] for c, r in zip(cands[::-1], refs[::-1])])[::-1]
    np.testing.assert_allclose(first, alone, rtol=0, atol=1e-12)
    np.testing.assert_allclose(first[::k], cider_d(CANDS, REFS), rtol=0, atol=1e-12)
    assert scorer.score([], []).shape == (0,)


def test_tokenize():
    assert tokenize("A man's  T-shirt, on the BEACH.") == "a man s t shirt on the beach"
    assert tokenize("...") == ""


def test_distinct_n():
    texts = ["a dog a dog", "a cat"]  # unigrams: a dog a dog a cat -> {a, dog, cat} 3/6
    assert distinct_n(texts, 1) == pytest.approx(3 / 6)
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)  # a-dog, dog-a, a-dog, a-cat
    assert distinct_n(["a", ""], 2) == 0.0


def test_bleu_matches_pycocoevalcap():
    gts, res = {i: r for i, r in enumerate(REFS)}, {i: [c] for i, c in enumerate(CANDS)}
    corpus, per_image = Bleu(4).compute_score(gts, res, verbose=0)
    assert bleu4_corpus(CANDS, REFS) == pytest.approx(corpus[3], abs=1e-12)
    np.testing.assert_allclose(bleu(CANDS, REFS), per_image[3], rtol=0, atol=1e-12)
    np.testing.assert_allclose(bleu(CANDS, REFS, n=2), per_image[1], rtol=0, atol=1e-12)


def _solid(rgb: tuple[int, int, int], size: int = 4) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (size, size, 3)).copy()


def test_colorfulness_hand_computed():
    half = _solid((255, 0, 0))
    half[:, 2:] = (0, 255, 0)  # rg = +-255 (mean 0, sd 255); yb = 127.5 everywhere (sd 0)
    batch = np.stack([_solid((128, 128, 128)), _solid((255, 0, 0)), half])
    expected = [0.0, 0.3 * np.hypot(255, 127.5), 255 + 0.3 * 127.5]
    np.testing.assert_allclose(colorfulness(batch), expected, atol=1e-9)
    # Lists of PIL images of mixed sizes give the same numbers.
    pil = [Image.fromarray(_solid((128, 128, 128), 3)), Image.fromarray(_solid((255, 0, 0), 5)), Image.fromarray(half)]
    np.testing.assert_allclose(colorfulness(pil), expected, atol=1e-9)
    with pytest.raises(ValueError):
        colorfulness(batch.astype(np.float32) / 255)


def test_fidelity_and_saturation():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    gray = np.repeat(true.mean(-1, keepdims=True).astype(np.uint8), 3, -1)
    np.testing.assert_array_equal(ab_error(true, true), 0.0)
    assert np.all(ab_error(gray, true) > 5)  # a gray image has a = b = 0
    assert np.all(np.isinf(psnr(true, true)))
    off = true.astype(np.int16)
    off[..., 0] = np.clip(off[..., 0] + 10, 0, 255)
    mse = ((off - true.astype(np.int16)) ** 2).mean((1, 2, 3))
    np.testing.assert_allclose(psnr(off.astype(np.uint8), list(true)), 10 * np.log10(255**2 / mse))
    np.testing.assert_allclose(saturation(np.stack([_solid((255, 0, 0)), _solid((255, 128, 128)), _solid((9, 9, 9))])),
                               [1.0, 127 / 255, 0.0])
    with pytest.raises(ValueError):
        psnr(true[:2], true)
