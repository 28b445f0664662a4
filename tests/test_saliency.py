"""saliency: the input gradient against finite differences, occlusion against hand-worked cases.

The gradient map comes from the model's own backward pass; here it is checked against
centred differences of the class logit in float64 (relative error below 1e-6 at the
pixels where it is largest and at random ones). Occlusion is checked on a stand-in model
whose answer can be worked out by hand, and on the real network with a patch covering the
whole image.
"""

import json

import numpy as np
import pytest
from PIL import Image

from tinyalex import cli, saliency
from tinyalex.data import load_images
from tinyalex.data.synthetic import CLASSES, make_images
from layers.loss import softmax

from trained_tiny import MEAN, STD, fitted_tiny, normalise, write_checkpoint


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("saliency")
    model = fitted_tiny()
    images, labels = make_images(3, 10, seed=0)          # the templates the model was fitted on
    paths = []
    for k, (name, image) in enumerate(zip(["cat.png", "ship.jpg", "cat.bmp"], images)):
        folder = root / f"in{k}"
        folder.mkdir()
        Image.fromarray(image).save(folder / name)
        paths.append(str(folder / name))
    return {"root": root, "model": model, "paths": paths,
            "ckpt": write_checkpoint(root / "tiny.npz", model)}


def run(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# --------------------------------------------------------------------------------------
# The gradient
# --------------------------------------------------------------------------------------

def test_input_gradient_matches_centred_differences():
    model = fitted_tiny(dtype=np.float64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 32, 32))
    cls = 7
    dx, logits, used = saliency.input_gradient(model, x, cls)
    assert dx.shape == x.shape and dx.dtype == np.float64 and used.tolist() == [cls]
    np.testing.assert_allclose(logits, model.forward(x), rtol=1e-12)

    def logit(z):
        return model.forward(z)[0, cls]

    flat = np.abs(dx).ravel()
    pixels = list(np.argsort(-flat)[:3]) + list(rng.choice(flat.size, 3, replace=False))
    eps = 1e-5
    for p in pixels:
        e = np.zeros(x.size)
        e[p] = eps
        e = e.reshape(x.shape)
        numeric = (logit(x + e) - logit(x - e)) / (2 * eps)
        analytic = dx.ravel()[p]
        err = abs(numeric - analytic) / max(1e-8, abs(numeric) + abs(analytic))
        assert err < 1e-6, (np.unravel_index(p, x.shape), analytic, numeric)
    assert flat.max() > 0


def test_input_gradient_per_image_classes_and_the_predicted_default(world):
    model = world["model"]
    x = normalise(make_images(2, 10, seed=0)[0])
    dx, logits, used = saliency.input_gradient(model, x)
    assert used.tolist() == logits.argmax(axis=1).tolist()
    both, _, _ = saliency.input_gradient(model, x, [1, 4])
    for i, cls in enumerate([1, 4]):                      # images do not interact in a batch
        alone, _, _ = saliency.input_gradient(model, x[i:i + 1], cls)
        # (to float32 rounding: a batch of one sums in another order than a batch of two, and
        # through eight layers that reaches about 1e-6 of the largest entry; mixing images up
        # would differ by the entries themselves)
        np.testing.assert_allclose(both[i], alone[0], rtol=1e-4, atol=1e-5 * np.abs(alone).max())
    assert saliency.gradient_map(both).shape == (2, 32, 32)


# --------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------

class BlockModel:
    """A stand-in model: logit 0 = SCALE * (sum of channel 0 over rows and columns 8..11),
    logit 1 = 0. So p_0 = sigmoid(logit 0), and a grey (0) patch lowers logit 0 by SCALE
    times the covered block pixels' sum."""
    SCALE = 0.25
    num_classes, dtype, input_shape = 2, np.dtype(np.float64), (3, 32, 32)

    def forward(self, x):
        z = self.SCALE * x[:, 0, 8:12, 8:12].sum(axis=(1, 2))
        return np.stack([z, np.zeros_like(z)], axis=1)


def test_patch_starts_cover_the_edges():
    assert saliency.patch_starts(32, 8, 2).tolist() == list(range(0, 25, 2))
    assert saliency.patch_starts(32, 8, 5).tolist() == [0, 5, 10, 15, 20, 24]
    assert saliency.patch_starts(32, 32, 3).tolist() == [0]
    with pytest.raises(ValueError):
        saliency.patch_starts(32, 33, 1)


def test_occlusion_on_a_model_worked_out_by_hand():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 32, 32))
    x[0, 8:12, 8:12] = 1.0                                  # logit 0 = 0.25 * 16 = 4
    patch, stride = 4, 2
    drops, per_pixel, p = saliency.occlusion(BlockModel(), x, 0, patch=patch, stride=stride,
                                             batch_size=7)   # 225 placements in 33 batches

    def sigmoid(z):
        return 1 / (1 + np.exp(-z))

    def overlap(a):                                          # covered rows (or columns) of 8..11
        return max(0, min(a + patch, 12) - max(a, 8))

    starts = saliency.patch_starts(32, patch, stride)
    expected = np.array([[sigmoid(4.0) - sigmoid(0.25 * (16 - overlap(y) * overlap(x0)))
                          for x0 in starts] for y in starts])
    assert p == pytest.approx(sigmoid(4.0), rel=1e-12)
    np.testing.assert_allclose(drops, expected, rtol=1e-12, atol=1e-15)
    assert drops[4, 4] == pytest.approx(sigmoid(4.0) - 0.5)     # the patch on the block: logit 0
    assert (drops[0] == 0).all() and (drops[:, -1] == 0).all()  # far from the block: no change
    # per pixel: the mean drop of the placements covering it
    total, count = np.zeros((32, 32)), np.zeros((32, 32))
    for i, y in enumerate(starts):
        for j, x0 in enumerate(starts):
            total[y:y + patch, x0:x0 + patch] += expected[i, j]
            count[y:y + patch, x0:x0 + patch] += 1
    np.testing.assert_allclose(per_pixel, total / count, rtol=1e-12, atol=1e-15)
    one_batch, _, _ = saliency.occlusion(BlockModel(), x, 0, patch=patch, stride=stride,
                                         batch_size=1000)
    np.testing.assert_array_equal(one_batch, drops)


def test_occlusion_with_a_patch_over_the_whole_image(world):
    model = world["model"]
    x = normalise(make_images(1, 10, seed=0)[0])[0]
    drops, per_pixel, p = saliency.occlusion(model, x, 3, patch=32, stride=1)
    probs = softmax(model.forward(np.stack([x, np.zeros_like(x)])))[:, 3]
    assert drops.shape == (1, 1) and p == pytest.approx(probs[0], rel=1e-4)   # float32, batch 1 vs 2
    assert drops[0, 0] == pytest.approx(probs[0] - probs[1], rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(per_pixel, drops[0, 0])


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------

def test_saliency_command_draws_each_image(world, capsys, tmp_path):
    out_dir = tmp_path / "maps" / "new"                      # created, parents too
    code, out, err = run(["saliency", world["ckpt"], *world["paths"], "--out", str(out_dir),
                          "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    probs = softmax(world["model"].forward(load_images(world["paths"], 32, MEAN, STD)))
    names = ["cat.png", "ship.png", "cat-2.png"]             # two images called "cat"
    assert [r["out"] for r in report] == [str(out_dir / n) for n in names]
    for r, p in zip(report, probs):
        assert r["class"] == r["predicted"] == CLASSES[int(p.argmax())]
        assert r["probability"] == pytest.approx(p.max(), rel=1e-4)   # float32, 3 images at once here
        with Image.open(r["out"]) as picture:
            assert picture.format == "PNG" and picture.size[0] > 3 * 192 > picture.size[1]
    code, out, err = run(["saliency", world["ckpt"], world["paths"][0], "--out", str(out_dir),
                          "--class", "truck", "--patch", "6", "--stride", "3"], capsys)
    assert code == 0, err
    assert out.startswith(f"{world['paths'][0]}: truck (p ") and "patch at x" in out


def test_saliency_bad_input(world, capsys, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    out_dir = str(tmp_path / "out")
    cases = [
        (["saliency", str(tmp_path / "none.npz"), world["paths"][0], "--out", out_dir],
         "checkpoint not found"),
        (["saliency", world["ckpt"], world["paths"][0], str(text), "--out", out_dir],
         f"cannot read image {text}"),
        (["saliency", world["ckpt"], world["paths"][0], "--out", out_dir, "--class", "unicorn"],
         "unknown class 'unicorn'; the model knows: airplane, automobile"),
        (["saliency", world["ckpt"], world["paths"][0], "--out", out_dir, "--patch", "33"],
         "--patch 33 is larger than the 32x32 input"),
        (["saliency", world["ckpt"], world["paths"][0], "--out", str(text)],
         "it is a file, not a directory"),
        (["saliency", world["ckpt"], world["paths"][0], "--out", str(text / "sub")],
         "cannot create directory"),
    ]
    for argv, words in cases:
        code, out, err = run(argv, capsys)
        assert code == 2 and out == "", argv
        assert err.startswith("error: ") and words in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "out").exists()                   # nothing created on the way


def test_at_chance():
    assert saliency.at_chance(np.full(10, 0.1)) and saliency.at_chance([0.19] + [0.09] * 9)
    assert not saliency.at_chance([0.21] + [0.79 / 9] * 9)
    assert saliency.at_chance([0.6, 0.4]) and not saliency.at_chance([0.8, 0.2])  # 2 classes: 0.75


def test_a_model_at_chance_is_said_to_be(world, capsys, tmp_path, monkeypatch, drawn_texts):
    """An fc8 of zeros gives every class 1/10: the picture and the command say the maps are
    noise; the fitted model's pictures and output carry no such note."""
    model = fitted_tiny()
    model.params["fc8.w"][:] = 0
    model.params["fc8.b"][:] = 0
    ckpt = write_checkpoint(tmp_path / "chance.npz", model)
    texts = drawn_texts()
    code, out, err = run(["saliency", ckpt, *world["paths"][:2], "--out", str(tmp_path / "a"),
                          "--json"], capsys)
    assert code == 0, err
    assert [r["at_chance"] for r in json.loads(out)] == [True, True]
    assert texts.count(saliency.CHANCE_NOTE) == 2
    assert err.count("\n") == 1 and err.startswith("warning: the model is at chance on 2 of "
                                                   "the 2 images (top probability below 0.20)")
    texts.clear()
    code, out, err = run(["saliency", world["ckpt"], world["paths"][0], "--out",
                          str(tmp_path / "b"), "--json"], capsys)
    assert code == 0 and err == ""
    assert json.loads(out)[0]["at_chance"] is False and saliency.CHANCE_NOTE not in texts
    assert any(" (p 0." in t for t in texts)              # the title: class and probability
