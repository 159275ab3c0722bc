"""Pictures people can read: own resolution (capped), titled panels, unique column names, organ legend,
sweep labels that never overlap."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from medseg.eval.figures import LAYOUT_KEY, place_labels, read_panels, short_names
from medseg.eval.viz import PALETTE, panel_grid, save_png
from tests.conftest import run_entry
from tests.tools.test_compare import _load_tool, make_run

SIZES = ["sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l"]


def _labels(size: int) -> np.ndarray:
    lab = np.zeros((size, size), np.int64)
    lab[size // 4 : size // 2, size // 4 : size // 2] = 1
    lab[size // 2 :, size // 2 :] = 2
    return lab


def test_short_names_are_unique_and_keep_the_distinguishing_part():
    assert short_names(SIZES) == ["hiera_t", "hiera_s", "hiera_b+", "hiera_l"]
    mixed = short_names(["sam2.1_hiera_t", "sam2_hiera_t", "unet"])
    assert len(set(mixed)) == 3
    assert short_names(["a", "a"]) == ["a", "a"]  # not unique to begin with: left alone


def test_comparison_columns_of_long_prefix_names_are_distinct(tmp_path):
    tool = _load_tool()
    runs = [
        make_run(tmp_path, f"run{i}", m, scale=1.0, best=1, epochs=[1], vis_cases=["c1"], color=(255, 0, 0))
        for i, m in enumerate(SIZES)
    ]
    out = tmp_path / "cmp"
    tool.compare_runs(runs, out)
    grid = np.asarray(Image.open(out / "grids" / "c1.png").convert("RGB"))
    h = 32  # tests/tools/test_compare.py draws 32-px panels
    head = grid[: grid.shape[0] - h]
    titles = [head[:, j * (h + 2) : j * (h + 2) + h] for j in range(2, 2 + len(SIZES))]
    for a, b in itertools.combinations(titles, 2):
        assert not np.array_equal(a, b)  # each arm's column title differs
    for t in titles:
        assert (t < 128).any()  # and holds text
    md = (out / "comparison.md").read_text(encoding="utf-8")
    assert "`hiera_t` = sam2.1_hiera_t" in md


def test_picture_is_drawn_at_the_image_resolution_with_titles():
    img = np.random.default_rng(0).random((256, 256))
    pic = panel_grid(img, _labels(256), _labels(256), boxes=np.array([[60, 60, 130, 130]]))
    lay = pic.layout
    assert (lay["panel_h"], lay["panel_w"], lay["n"]) == (256, 256, 4)
    assert pic.shape[0] >= 256 and pic.shape[1] >= 4 * 256
    assert lay["titles"] == ["image", "reference", "prediction", "prompt"]
    for j in range(4):  # a title above every panel
        assert (pic[: lay["top"], j * 258 : j * 258 + 256] < 128).any()
    big = panel_grid(np.zeros((1024, 768)), None, np.zeros((1024, 768), int))
    assert (big.layout["panel_h"], big.layout["panel_w"]) == (512, 384)  # capped, aspect kept
    small = panel_grid(np.zeros((48, 48)), None, np.zeros((48, 48), int))
    assert small.layout["panel_w"] == 144  # enlarged by an integer factor so titles fit


def test_saved_picture_keeps_its_layout_for_compare(tmp_path):
    pic = panel_grid(np.zeros((100, 80)), _labels(100)[:, :80], _labels(100)[:, :80])
    path = save_png(pic, tmp_path / "p.png")
    with Image.open(path) as im:
        assert LAYOUT_KEY in im.text
    panels = read_panels(path)
    assert len(panels) == 3 and all(p.shape[:2] == (200, 160) for p in panels)  # enlarged x2


def test_legend_shows_each_organ_colour():
    lab = _labels(128)
    plain = panel_grid(np.zeros((128, 128)), lab, lab)
    pic = panel_grid(np.zeros((128, 128)), lab, lab, names={1: "liver", 2: "spleen"})
    assert pic.shape[0] > plain.shape[0]
    legend = pic[pic.layout["top"] + 128 :]
    for k in (1, 2):
        assert (legend == PALETTE[k]).all(-1).any(), k


def test_2d_validation_pictures_use_the_image_resolution(tmp_path):
    from medseg.data import synthetic

    synthetic.write_kvasir(tmp_path / "kv", n=4, size=256)
    out = tmp_path / "run"
    run_entry(
        "train_2d",
        [
            f"dataset.root={tmp_path / 'kv'}",
            "model.checkpoint=null",
            "train=false",
            "vis=true",
            "vis_max_cases=1",
        ],
        out,
    )
    (png,) = list((out / "vis").rglob("*.png"))
    with Image.open(png) as im:
        assert min(im.size) >= 256  # the model ran at 64 px; the picture is at the image's 256 px
    panels = read_panels(png)
    assert panels[0].shape[:2] == (256, 256)


@pytest.mark.parametrize("n", [4, 8])
def test_sweep_point_labels_never_overlap(n):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [10.0 + 0.01 * i for i in range(n)]  # nearly the same point: labels would stack
    ys = [0.5 + 0.001 * i for i in range(n)]
    ax.scatter(xs, ys)
    arts = place_labels(ax, xs, ys, [f"sam2.1_hiera_{i}" for i in range(n)])
    fig.canvas.draw()
    boxes = [a.get_window_extent(fig.canvas.get_renderer()) for a in arts]
    assert len(boxes) == n
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    plt.close(fig)
