"""The tuner's sample grid (tuner/monitor.save_samples) shows each output at the size it is drawn, not the input's."""

import numpy as np
import torch
from PIL import Image

from tuner.monitor import fit, save_samples
from vrlhf.shapes import make_shapes
from vrlhf.tasks import get_task

TINY = dict(image_size=24, patch_size=6, hidden_size=32, encoder_layers=1, decoder_layers=1, heads=2)


def cells(grid: Image.Image, width: int, height: int) -> list[list[np.ndarray]]:
    return [[np.asarray(grid.crop((x, y, x + width, y + height))) for x in range(0, grid.width, width)]
            for y in range(0, grid.height, height)]


def test_detection_samples_keep_their_drawn_size(tmp_path):
    """Detection draws a 48 px input's boxes at 384 px: each cell is 384 px and the greedy cell is the drawing itself
    (the old grid shrank it to 48 px, labels unreadable)."""
    task = get_task("detection")
    policy = task.build_policy(**TINY, max_boxes=2).eval()
    rows = make_shapes(2, seed=3)
    path = save_samples(task, policy, rows, tmp_path / "samples", k=2)
    grid = Image.open(path)
    with torch.no_grad():
        greedy = task.decode(policy, rows, policy.greedy(task.pixel_values(policy, [r["image"] for r in rows])).tokens)
    drawn = [task.render(r, o) for r, o in zip(rows, greedy)]
    assert drawn[0].size == (384, 384) and grid.size == (384 * (1 + 1 + 2 + 1), 384 * 2)
    grid_cells = cells(grid, 384, 384)
    for row, line, drawing in zip(rows, grid_cells, drawn):
        assert np.array_equal(line[1], np.asarray(drawing))  # the greedy output, pixel for pixel
        enlarged = np.asarray(row["image"].resize((384, 384), Image.NEAREST))
        assert np.array_equal(line[0], enlarged) and np.array_equal(line[-1], enlarged)  # input and truth, sharp


def test_colorization_samples_stay_at_the_input_size(tmp_path):
    """Colorization renders at the input's size: the grid's cells are that size, the input shown gray."""
    task = get_task("colorization")
    policy = task.build_policy(**TINY, grid=4).eval()
    rows = make_shapes(2, seed=3, size=32)
    grid = Image.open(save_samples(task, policy, rows, tmp_path / "samples", k=2))
    with torch.no_grad():
        greedy = task.decode(policy, rows, policy.greedy(task.pixel_values(policy, [r["image"] for r in rows])).tokens)
    size = task.render(rows[0], greedy[0]).size
    assert grid.size == (size[0] * 5, size[1] * 2)
    first = cells(grid, *size)[0]
    assert np.array_equal(first[1], np.asarray(fit(task.render(rows[0], greedy[0]).convert("RGB"), size)))
    assert np.array_equal(first[0], np.asarray(fit(task.show_input(rows[0]["image"]).convert("RGB"), size)))
    assert np.ptp(first[0], axis=2).max() == 0  # gray


def test_fit_keeps_the_aspect_and_enlarges_sharply():
    image = Image.fromarray(np.array([[0, 255]], dtype=np.uint8))  # 2 x 1
    assert fit(image, (8, 8)).size == (8, 4) and np.asarray(fit(image, (8, 8)))[0].tolist() == [0] * 4 + [255] * 4
    assert fit(Image.new("RGB", (400, 200)), (100, 100)).size == (100, 50)
