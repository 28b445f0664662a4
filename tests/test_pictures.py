"""Pictures: files written and plausible, colourfulness tells grey from colour, edge cases."""

import math
import os

import numpy as np
import pytest
from PIL import Image

from tinyalex.pictures import colourfulness, confusion_png, filter_grid, plot_curves


def _rows(epochs, *, val=True):
    rows = []
    for e in range(1, epochs + 1):
        rows.append({"epoch": e, "train_loss": 2.0 / e, "train_acc": 0.3 + 0.05 * e,
                     "val_loss": 2.1 / e if val else float("nan"),
                     "val_acc": 0.28 + 0.05 * e if val else None})
    return rows


def _colours(path):
    """The set of distinct RGB colours in a PNG."""
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(np.int64)
    packed = np.unique(pixels[:, 0] << 16 | pixels[:, 1] << 8 | pixels[:, 2])
    return {(int(p >> 16), int(p >> 8 & 255), int(p & 255)) for p in packed}


def _has_colour_near(path, rgb, tol=12):
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    return bool(np.any(np.abs(pixels - np.array(rgb)).max(axis=1) <= tol))


def test_plot_curves_writes_a_png_with_both_series(tmp_path):
    path = tmp_path / "curves.png"
    plot_curves(_rows(10), path)
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (1100, 430)
    assert 10_000 < path.stat().st_size < 500_000
    assert _has_colour_near(path, (31, 119, 180))        # train (blue)
    assert _has_colour_near(path, (255, 127, 14))        # validation (orange)
    assert os.listdir(tmp_path) == ["curves.png"]        # no temporary file left


def test_plot_curves_one_epoch(tmp_path):
    path = tmp_path / "curves.png"
    plot_curves(_rows(1), path)
    assert Image.open(path).size == (1100, 430)
    assert _has_colour_near(path, (31, 119, 180)) and _has_colour_near(path, (255, 127, 14))


def test_plot_curves_without_validation_draws_no_validation_series(tmp_path):
    path = tmp_path / "curves.png"
    plot_curves(_rows(3, val=False), path)
    assert _has_colour_near(path, (31, 119, 180))
    assert not _has_colour_near(path, (255, 127, 14), tol=40)


def test_plot_curves_skips_a_nan_training_loss(tmp_path):
    rows = _rows(4)
    rows[2]["train_loss"] = float("nan")
    rows[3]["train_loss"] = math.inf
    rows[1]["val_loss"] = ""                     # a gap in a row read back from a CSV
    plot_curves(rows, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_plot_curves_rejects_percent_accuracies_and_no_rows(tmp_path):
    rows = _rows(2)
    rows[0]["train_acc"] = 45.0
    with pytest.raises(ValueError, match="fraction"):
        plot_curves(rows, tmp_path / "curves.png")
    with pytest.raises(ValueError, match="at least one"):
        plot_curves([], tmp_path / "curves.png")
    assert os.listdir(tmp_path) == []


def test_plot_curves_failure_keeps_the_old_picture(tmp_path, monkeypatch):
    path = tmp_path / "curves.png"
    plot_curves(_rows(2), path)
    before = path.read_bytes()

    def broken_save(self, f, **kwargs):
        f.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        plot_curves(_rows(5), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["curves.png"]


# --- filters ---------------------------------------------------------------------------------

def _towers(kh, seed=0):
    """96 kernels: tower 0 grey (equal channels plus a little noise), tower 1 colourful."""
    rng = np.random.default_rng(seed)
    grey = np.repeat(rng.standard_normal((48, 1, kh, kh)), 3, axis=1)
    grey += 0.02 * rng.standard_normal(grey.shape)
    colourful = rng.standard_normal((48, 3, kh, kh))
    return np.concatenate([grey, colourful]).astype(np.float32)


@pytest.mark.parametrize("kh,cell", [(3, 48), (11, 44)])
def test_filter_grid_separates_grey_and_colourful_towers(tmp_path, kh, cell):
    path = tmp_path / "conv1.png"
    scores = filter_grid(_towers(kh), path)
    assert len(scores) == 2
    assert scores[0] < 0.05 and scores[1] > 0.5
    image = Image.open(path).convert("RGB")
    # 16 kernels to a row, each `cell` pixels wide (3x3 x16, 11x11 x4), 3-pixel gaps
    assert image.width >= 16 * cell and 3 * 2 * cell < image.height < 3 * 2 * cell + 250
    # The top block is grey, the bottom one is not: compare colour spread per half.
    pixels = np.asarray(image).astype(float)
    spread = pixels.std(axis=2)
    top, bottom = spread[: image.height // 2], spread[image.height // 2:]
    assert bottom.mean() > 5 * top.mean()


def test_filter_grid_upscales_with_nearest_neighbour(tmp_path):
    w = np.zeros((2, 3, 3, 3), np.float32)
    w[0, :, 0, 0] = 1.0            # grey kernel: one white pixel, top left, the rest black
    w[1, 0] = 1.0                  # pure red kernel (red 1, green and blue 0)
    filter_grid(w, tmp_path / "f.png", towers=1, scale=10)
    image = np.asarray(Image.open(tmp_path / "f.png").convert("RGB")).astype(int)
    red = np.all(image == (255, 0, 0), axis=2)
    ys, xs = np.nonzero(red)
    # the red kernel is one solid 30x30 block of pure red
    assert red.sum() == 900 and np.ptp(ys) == 29 and np.ptp(xs) == 29
    y0, x0 = ys.min(), xs.min() - 30 - 3            # kernel 0 sits one cell + gap to the left
    tile = image[y0:y0 + 30, x0:x0 + 30]
    assert np.all(tile[:10, :10] == 255)           # the white pixel, 10x10
    tile_black = tile.copy()
    tile_black[:10, :10] = 0
    assert np.all(tile_black == 0)                 # everything else black


def test_colourfulness_definition():
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.standard_normal((5, 1, 4, 4)), 3, axis=1)
    assert np.allclose(colourfulness(grey), 0.0)
    # Only colour, no luminance pattern: every pixel's channels sum to the same value.
    pure = np.zeros((1, 3, 2, 2))
    pure[0, 0] = [[1, -1], [1, -1]]
    pure[0, 1] = [[-1, 1], [-1, 1]]
    assert colourfulness(pure)[0] == pytest.approx(1.0)
    assert colourfulness(np.zeros((1, 3, 3, 3)))[0] == 0.0           # constant kernel
    assert colourfulness(3 * grey + 1 + 0.1 * rng.standard_normal(grey.shape)).max() < 0.2
    random_channels = colourfulness(rng.standard_normal((200, 3, 5, 5)))
    assert 0.6 < random_channels.mean() < 0.85


def test_filter_grid_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="RGB"):
        filter_grid(np.zeros((4, 1, 3, 3)), tmp_path / "f.png")
    with pytest.raises(ValueError, match="towers"):
        filter_grid(np.zeros((5, 3, 3, 3)), tmp_path / "f.png", towers=2)
    assert os.listdir(tmp_path) == []


# --- confusion matrix ------------------------------------------------------------------------

def test_confusion_png(tmp_path):
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
               "ship", "truck"]
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 30, (10, 10))
    matrix[np.arange(10), np.arange(10)] = 800
    matrix[0, 1:] = 0                                # every airplane right: fraction 1
    path = tmp_path / "confusion.png"
    confusion_png(matrix, classes, path)
    image = Image.open(path).convert("RGB")
    assert 500 < image.width < 1200 and 500 < image.height < 1200
    assert 10_000 < path.stat().st_size < 500_000
    assert (8, 48, 107) in _colours(path)            # the darkest blue, for fraction 1
    assert (path.stat().st_mode & 0o777) != 0o600    # not left private by mkstemp


def test_confusion_png_small_and_empty_rows(tmp_path):
    confusion_png(np.array([[3, 1], [0, 0]]), ["no", "yes"], tmp_path / "c.png")
    assert Image.open(tmp_path / "c.png").width > 100


def test_confusion_png_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="square"):
        confusion_png(np.zeros((2, 3)), ["a", "b"], tmp_path / "c.png")
    with pytest.raises(ValueError, match="class names"):
        confusion_png(np.zeros((2, 2)), ["a"], tmp_path / "c.png")
    with pytest.raises(ValueError, match=">= 0"):
        confusion_png(-np.ones((2, 2)), ["a", "b"], tmp_path / "c.png")


def _spy_panels(monkeypatch):
    import tinyalex.pictures as pictures
    panels, real = [], pictures._draw_panel

    def spy(draw, box, title, xs, series, **options):
        panels.append(dict(options, title=title))
        real(draw, box, title, xs, series, **options)
    monkeypatch.setattr(pictures, "_draw_panel", spy)
    return panels


def test_the_accuracy_axis_is_0_to_100_with_a_chance_line(tmp_path, monkeypatch, drawn_texts):
    """A run at chance (accuracy 9.5-11.5%) is drawn low on a 0-100% axis beside a dashed
    chance line with its legend entry, the legend kept off the curves."""
    panels, texts = _spy_panels(monkeypatch), drawn_texts()
    rows = [{"epoch": e, "train_loss": 2.3, "train_acc": 0.095 + 0.005 * e,
             "val_loss": 2.31, "val_acc": 0.115 - 0.005 * e} for e in range(1, 5)]
    plot_curves(rows, tmp_path / "curves.png", chance=0.1)
    loss, accuracy = panels
    lo, hi, ticks = accuracy["y_range"]
    assert accuracy["title"] == "Accuracy (%)" and lo <= 0 and hi >= 100
    assert ticks[0] == 0 and ticks[-1] == 100
    assert [(label, y) for label, _, y in accuracy["levels"]] == [("chance 10%", 10.0)]
    assert "chance 10%" in texts and loss["levels"] == []
    assert accuracy["legend_corner"] == "top"       # the curves run along the bottom
    panels.clear()
    plot_curves(_rows(3), tmp_path / "curves.png")  # no chance given: no line, the same axis
    assert panels[1]["levels"] == [] and panels[1]["y_range"] == accuracy["y_range"]


def test_confusion_png_says_which_images_and_views(tmp_path, monkeypatch, drawn_texts):
    texts = drawn_texts()
    subtitle = "test split; flip TTA (image + mirror)"
    confusion_png(np.array([[3, 1], [0, 2]]), ["no", "yes"], tmp_path / "c.png", subtitle=subtitle)
    assert subtitle in texts
    assert Image.open(tmp_path / "c.png").size[0] > 260      # wide enough for the subtitle
