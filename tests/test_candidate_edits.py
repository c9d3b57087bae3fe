"""Candidate edits (`vrlhf sample --edits`): each edit changes what it claims, reads no ground truth, and sampling
puts the edits into the labeling database as candidates of their own round."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.color import rgb2lab

from vrlhf.shapes import make_shapes, parse_caption, shape_masks
from vrlhf.tasks import caption_edits, colorization_edits, get_task
from vrlhf.tasks.colorization_oracle import corrupt


class Blind(dict):
    """A row whose hidden ground truth cannot be read: what a real user's row is."""

    def __getitem__(self, key):
        if key == "attributes":
            raise AssertionError("an edit read the row's ground truth")
        return super().__getitem__(key)

    def get(self, key, default=None):
        return self[key] if key in self else default


def blind(row: dict) -> Blind:
    return Blind({key: value for key, value in row.items() if key != "attributes"})


def lab(image: Image.Image) -> np.ndarray:
    return rgb2lab(np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0)


def test_chroma_edits_scale_ab_and_keep_lightness():
    row = make_shapes(1, seed=3)[0]
    muted = colorization_edits.scale_chroma(row["image"], 0.4)  # in gamut when scaled up again by 1.5
    edited = get_task("colorization").edits(blind(row), muted, np.random.default_rng(0))
    before = lab(muted)
    chroma = np.hypot(before[..., 1], before[..., 2])
    coloured = chroma > 5
    for name, scale in (("chroma×0.5", 0.5), ("chroma×1.5", 1.5)):
        after = lab(edited[name])
        ratio = np.hypot(after[..., 1], after[..., 2])[coloured] / chroma[coloured]
        assert abs(np.median(ratio) - scale) < 0.03, name
        assert np.abs(after[..., 0] - before[..., 0]).max() < 1.0, name  # the lightness is the input's


def test_neutral_background_clears_the_background_and_leaves_the_shapes():
    rng = np.random.default_rng(0)
    rows = make_shapes(40, seed=11)
    touched, left = [], []
    for row in rows:
        tinted = corrupt(row, rng, ("tint",))  # the true colours on a background tinted like a bleeding colorizer's
        out = get_task("colorization").edits(blind(row), tinted, rng)["neutral background"]
        masks = shape_masks(row["attributes"], tinted.size[0])
        anywhere = np.logical_or.reduce(masks)
        background = ~ndimage.binary_dilation(anywhere)  # the oracle's background: a band around edges left out
        before, after = lab(tinted), lab(out)
        assert np.hypot(before[..., 1], before[..., 2])[background].mean() > 2.5  # there was a tint to remove
        left.append(np.hypot(after[..., 1], after[..., 2])[background] > 1.5)
        cores = ndimage.binary_erosion(anywhere)
        touched.append(np.abs(after[..., 1:] - before[..., 1:])[cores].max(axis=-1) > 1.0)
    assert np.concatenate(left).mean() < 0.002  # the tint is gone (but for a pixel of noise here and there)
    # and the shapes keep their colours, though a shape's gray is often as light as the background's
    assert np.concatenate(touched).mean() < 0.02


def test_one_colour_per_region_unifies_each_shape_and_leaves_the_background():
    """Shapes in two hues (half of one turned) and blotchy: the edit gives each shape's core one colour, close to its
    median, and keeps a neutral background neutral."""
    rng = np.random.default_rng(1)
    spreads, kept = [], []
    for row in make_shapes(30, seed=12):
        blotchy = corrupt(row, rng, ("hue", "noise"))
        out = get_task("colorization").edits(blind(row), blotchy, rng)["one colour per region"]
        before, after = lab(blotchy), lab(out)
        for mask in shape_masks(row["attributes"], blotchy.size[0]):
            core = ndimage.binary_erosion(mask, iterations=2)
            if core.sum() > 10:
                spreads.append([np.sqrt(image[core, 1:].var(axis=0).sum()) for image in (before, after)])
        background = ~ndimage.binary_dilation(np.logical_or.reduce(shape_masks(row["attributes"], blotchy.size[0])),
                                              iterations=2)
        kept.append(np.abs(after[background, 1:] - before[background, 1:]).max(axis=-1) < 1.0)
    spreads = np.array(spreads)
    assert np.median(spreads[:, 0]) > 4 and np.median(spreads[:, 1]) < 0.25 * np.median(spreads[:, 0])
    assert np.concatenate(kept).mean() > 0.98  # the background is the background's business (neutral background)


@pytest.mark.parametrize("seed", range(3))
def test_caption_edits_add_one_shape_and_drop_one_attribute(seed):
    from vrlhf.shapes_grammar import caption

    rng = np.random.default_rng(seed)
    task = get_task("captioning")
    added = dropped = 0
    for row in make_shapes(40, seed=20 + seed):
        shapes = row["attributes"]["shapes"]
        output = caption(shapes[:1], rng)  # one shape said; the other samples say more
        others = [caption(shapes, rng), caption(shapes[::-1], rng)]
        edited = task.edits(blind(row), output, rng, others)
        mentions = parse_caption(output)
        if len(shapes) > 1:
            more = parse_caption(edited["shape added"])
            assert len(more) == len(mentions) + 1 and more[:1] == mentions  # appended, the rest as it was
            assert any(all(m[s] in (None, shape[s]) for s in m) for shape in shapes[1:] for m in more[1:])
            added += 1
        less = parse_caption(edited["attribute dropped"])
        stated = lambda ms: sum(v is not None for m in ms for v in m.values())  # noqa: E731
        assert len(less) == len(mentions) and stated(less) == stated(mentions) - 1
        dropped += 1
    assert added > 5 and dropped == 40


def test_caption_edit_drops_the_attribute_the_other_samples_contradict():
    rng = np.random.default_rng(0)
    others = ["a big green circle on the left", "a green circle on the left side", "one large circle in green"]
    for _ in range(5):
        dropped = caption_edits.drop_attribute("a big circle in red on the left", others, rng)
        assert dropped == "a big circle on the left"  # "in red" goes: the others say green
    assert caption_edits.add_shape("a red circle", ["a red circle"], rng) is None  # nothing to add
    added = caption_edits.add_shape("a red circle", ["a red circle and a small blue square on the right"] * 2, rng)
    assert parse_caption(added)[1] == {"size": "small", "colour": "blue", "kind": "square", "position": "right"}


def test_background_on_real_photos_is_the_flat_region_around_the_border():
    """On photos the estimate is what touches the border at the border's lightness: a share of the image, never
    all of it (docs/DEMO.md gives the numbers)."""
    from vrlhf.photos import photo_rows

    shares = [colorization_edits.background_mask(r["image"]).mean() for r in photo_rows(size=48, crops_per_photo=1)]
    assert all(0.0 <= s < 0.9 for s in shares) and np.mean(shares) < 0.5


@pytest.mark.parametrize("task_name", ["colorization", "captioning"])
def test_sample_with_edits_puts_edited_candidates_in_their_own_round(task_name, tmp_path):
    from labeler.export import export
    from labeler.sampling import main as sample_main
    from labeler.store import Store
    from vrlhf.shapes import write_imagefolder

    rows = make_shapes(4, seed=2)
    data = write_imagefolder(rows, tmp_path / "shapes")
    policy = get_task(task_name).DEMO_POLICY
    db = str(tmp_path / "labels.sqlite")
    assert sample_main(["--task", task_name, "--policy", str(policy), "--data", str(data), "--db", db, "--k", "3",
                        "--edits", "1", "--temperature", "1.5", "--name", "mle"]) == 0
    store = Store(db)
    assert [r["policy_name"] for r in store.rounds()] == ["mle", "mle (edits)"]
    views = []
    while (v := store.next_comparison("ann")) is not None:
        store.vote(v["token"], "rank", "CAB", annotator="ann")
        views.append(v)
    assert len(views) == 4
    for v in views:  # two of the policy's samples and one edit of them, shown in whichever order
        made_by = store.candidates([c["candidate_id"] for c in v["candidates"]])
        assert sorted(c["policy"] for c in made_by.values()) == ["mle", "mle", "mle (edits)"]
    exported = export(store, tmp_path / "export", "hf", task=task_name)
    assert exported["pairs"] == 4 * 3  # a ranking of 3 is 3 pairs
    import datasets

    pairs = datasets.load_from_disk(str(tmp_path / "export"))
    assert "mle (edits)" in set(pairs["chosen_policy"]) | set(pairs["rejected_policy"])


def test_demo_edits_flag_picks_one_edit_in_comparisons_of_one_policy():
    from loop.demo import DemoConfig, check_config
    from loop.rounds import candidate_edits
    from vrlhf.errors import ConfigError

    with pytest.raises(ConfigError, match="--edits takes on or off, not 'yes'"):
        check_config(DemoConfig(edits="yes"))
    task = get_task("colorization")
    assert candidate_edits(DemoConfig(edits="on"), task, {"against": None}) == 1  # k samples of one policy
    assert candidate_edits(DemoConfig(edits="on"), task, {"against": "mle"}) == 0  # a pair of two policies
    assert candidate_edits(DemoConfig(edits="off"), task, {"against": None}) == 0
