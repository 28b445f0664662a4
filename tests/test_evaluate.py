"""evaluate / predict / filters on a tiny checkpoint and small synthetic data.

Scores are checked against a direct computation that shares no code with tinyalex.data's
views: the images are normalised, padded, cropped and mirrored here with plain NumPy, run
through model.forward, and the softmax averaged by hand.
"""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from tinyalex import cli
from tinyalex.checkpoint import load_model, save_checkpoint
from tinyalex.data import BatchLoader, load_dataset, load_images
from tinyalex.data.synthetic import CLASSES, make_images, to_image, write_cifar_batches, \
    write_image_folder
from tinyalex.errors import CheckpointError
from tinyalex.model import build_model
from tinyalex.pictures import colourfulness
from tinyalex.scoring import predict_logits, score_arrays, score_loader

from trained_tiny import MEAN, SEED, STD, VAL_SIZE, normalise

# Deliberately not the data's statistics: evaluation must use the checkpoint's, not recompute.


def direct_probs(model, images, tta):
    """Softmax averaged over the test-time views, computed without tinyalex.data."""
    images = images.astype(np.float64)
    if tta == "none":
        views = [images]
    elif tta == "flip":
        views = [images, images[:, :, ::-1]]
    else:   # 32x32 windows of the image padded by 4 black pixels: corners, centre, mirrors
        padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
        crops = [padded[:, t:t + 32, l:l + 32] for t, l in [(0, 0), (0, 8), (8, 0), (8, 8), (4, 4)]]
        views = crops + [c[:, :, ::-1] for c in crops]
    logits = model.forward(normalise(np.concatenate(views))).astype(np.float64)  # (V*N, K)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).reshape(len(views), len(images), -1).mean(axis=0)


def fitted_model(images, labels):
    """A tiny model whose predictions vary: random convs + fc6/fc7, fc8 fitted by least squares.

    (Fresh random weights predict one class for everything.) The fc7 features are read by
    a twin model whose fc8 is the identity.
    """
    model = build_model("tiny", 10, init="he", seed=3)
    hidden = model.params["fc8.w"].shape[1]
    probe = build_model("tiny", hidden, init="he", seed=3)
    probe.params.update({k: v for k, v in model.params.items() if not k.startswith("fc8")})
    probe.params["fc8.w"] = np.eye(hidden, dtype=np.float32)
    probe.params["fc8.b"] = np.zeros(hidden, np.float32)
    h = probe.forward(normalise(images)).astype(np.float64)             # (N, hidden)
    design = np.c_[h, np.ones(len(h))]
    coef = np.linalg.lstsq(design, 5.0 * np.eye(10)[labels], rcond=None)[0]
    model.params["fc8.w"] = np.ascontiguousarray(coef[:hidden].T, np.float32)
    model.params["fc8.b"] = coef[hidden].astype(np.float32)
    return model


def write_ckpt(path, net, **meta):
    full = {"model": net.name, "num_classes": net.num_classes, "classes": list(CLASSES),
            "image_size": 32, "init": "he", "epoch": 2, "batch": 0,
            "config": {"data": None, "val_size": VAL_SIZE, "seed": SEED, "batch_size": 8},
            "metrics": [], "best_val_acc": 0.5}
    full.update(meta)
    save_checkpoint(path, params=net.params, optimizer={},
                    arrays={"mean": MEAN, "std": STD, "pca_eigval": np.ones(3, np.float32),
                            "pca_eigvec": np.eye(3, dtype=np.float32)},
                    meta=full)
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    cifar = str(root / "cifar-10-batches-py")
    written = write_cifar_batches(cifar, per_batch=10, n_test=30, seed=0)
    model = fitted_model(written["train_x"], written["train_y"])
    folder = str(root / "mine")                 # ROOT/<class>/*: two of the ten classes
    write_image_folder(folder, classes=["cat", "ship"], split=None, per_class=4, seed=5)
    return {"root": root, "cifar": cifar, "folder": folder, "model": model,
            "data_dir": str(root / "data"), "ckpt": write_ckpt(root / "tiny.npz", model)}


def run(argv, capsys):
    """`python -m tinyalex ARGV...` in this process: (exit code, stdout, stderr)."""
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def run_json(argv, capsys):
    code, out, err = run(argv + ["--json"], capsys)
    assert code == 0, err
    return json.loads(out)


def check_scores(result, model, images, labels, tta):
    """result (score_arrays' dict or the JSON) against the direct computation."""
    probs = direct_probs(model, images, tta)
    predicted = probs.argmax(axis=1)
    in_top5 = (np.argsort(-probs, axis=1)[:, :5] == labels[:, None]).any(axis=1)
    confusion = np.asarray(result["confusion"])
    assert result["top1"] == pytest.approx(np.mean(predicted == labels), abs=1e-12)
    assert result["top5"] == pytest.approx(np.mean(in_top5), abs=1e-12)
    assert result["top5"] >= result["top1"]
    assert result["loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(len(labels)), labels])),
                                           rel=1e-4)
    expected = np.zeros((10, 10), np.int64)
    np.add.at(expected, (labels, predicted), 1)
    np.testing.assert_array_equal(confusion, expected)
    np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(labels, minlength=10))


def check_centre(result, model, images, labels):
    """The "centre" scores beside flip TTA: the image alone, as --tta none scores it."""
    probs = direct_probs(model, images, "none")
    centre = result["centre"]
    assert set(centre) == {"top1", "top5", "loss"}
    assert centre["top1"] == pytest.approx(np.mean(probs.argmax(axis=1) == labels), abs=1e-12)
    in_top5 = (np.argsort(-probs, axis=1)[:, :5] == labels[:, None]).any(axis=1)
    assert centre["top5"] == pytest.approx(np.mean(in_top5), abs=1e-12)
    assert centre["loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(len(labels)), labels])),
                                           rel=1e-4)


# --------------------------------------------------------------------------------------
# Library functions
# --------------------------------------------------------------------------------------

def test_load_model_restores_the_parameters(world):
    model, ckpt = load_model(world["ckpt"])
    assert model.name == "tiny" and model.num_classes == 10 and ckpt.meta["classes"] == CLASSES
    for name, value in world["model"].params.items():
        np.testing.assert_array_equal(model.params[name], value)
        assert model.params[name].dtype == np.float32
    np.testing.assert_array_equal(ckpt.arrays["mean"], MEAN)


@pytest.mark.parametrize("tta, batch_size", [("none", 16), ("flip", 16), ("10crop", 100)])
def test_score_arrays_matches_a_direct_computation(world, tta, batch_size):
    images, labels = make_images(24, 10, seed=0)          # the training templates: varied answers
    model = world["model"]
    # batch_size counts views: 16, 8 and 10 images a pass, the last pass a partial one
    result = score_arrays(model, images, labels, mean=MEAN, std=STD, image_size=32, tta=tta,
                             batch_size=batch_size)
    check_scores(result, model, images, labels, tta)
    if tta == "flip":
        check_centre(result, model, images, labels)
    else:
        assert "centre" not in result
    assert result["n"] == 24
    assert (result["confusion"].sum(axis=0) > 0).sum() >= 2   # not one class for every image
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(result["per_class"],
                                   np.diag(result["confusion"]) / result["counts"])


def test_predict_logits_batches_agree_with_one_pass(world):
    images, _ = make_images(9, 10, seed=1)
    x = normalise(images)
    one = world["model"].forward(x)
    batched = predict_logits(world["model"], x, batch_size=4)
    assert batched.dtype == np.float32
    np.testing.assert_allclose(batched, one, rtol=1e-4, atol=1e-4)   # BLAS blocks by batch size


def test_score_arrays_marks_classes_without_images(world):
    images, labels = make_images(6, 2, seed=0)            # labels 0 and 1 only
    result = score_arrays(world["model"], images, labels, mean=MEAN, std=STD, tta="none")
    assert np.isnan(result["per_class"][2:]).all() and not np.isnan(result["per_class"][:2]).any()
    assert result["counts"].tolist() == [3, 3] + [0] * 8


# --------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------

def direct_line_scores(model, images, labels, tta):
    """"top-1 X%   top-5 Y%   loss Z" as the report prints them, computed directly."""
    probs = direct_probs(model, images, tta)
    top1 = np.mean(probs.argmax(axis=1) == labels)
    top5 = np.mean((np.argsort(-probs, axis=1)[:, :5] == labels[:, None]).any(axis=1))
    loss = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
    return f"top-1 {100 * top1:.2f}%   top-5 {100 * top5:.2f}%   loss {loss:.4f}"


def test_evaluate_test_split_text(world, capsys):
    """The default is flip TTA: its line first, the centre image's under it."""
    code, out, err = run(["evaluate", world["ckpt"], "--data", world["cifar"],
                          "--data-dir", world["data_dir"]], capsys)
    assert code == 0, err
    ds = load_dataset(world["cifar"], data_dir=world["data_dir"], val_size=0)
    flip = direct_line_scores(world["model"], ds.test_x, ds.test_y, "flip")
    centre = direct_line_scores(world["model"], ds.test_x, ds.test_y, "none")
    assert flip != centre                    # the two lines can be told apart
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("top-1"))
    assert "test split" in out
    assert lines[first] == f"{flip}   flip TTA (image + mirror), 30 images"
    assert lines[first + 1] == f"{centre}   centre image only"
    assert "per-class accuracy (flip TTA)" in out and "confusion matrix" in out
    for name in CLASSES:                    # a row per class, 3 test images each
        assert any(line.split()[:2] == [str(CLASSES.index(name)), name]
                   and sum(map(int, line.split()[2:])) == 3
                   for line in out.splitlines()), name


def test_evaluate_tta_none_text_is_the_centre_line_alone(world, capsys):
    code, out, err = run(["evaluate", world["ckpt"], "--data", world["cifar"],
                          "--data-dir", world["data_dir"], "--tta", "none"], capsys)
    assert code == 0, err
    ds = load_dataset(world["cifar"], data_dir=world["data_dir"], val_size=0)
    centre = direct_line_scores(world["model"], ds.test_x, ds.test_y, "none")
    assert f"{centre}   (30 images)" in out.splitlines()
    assert "centre image only" not in out and "flip TTA" not in out


def test_evaluate_test_split_json(world, capsys):
    report = run_json(["evaluate", world["ckpt"], "--data", world["cifar"],
                       "--data-dir", world["data_dir"], "--split", "test"], capsys)
    ds = load_dataset(world["cifar"], data_dir=world["data_dir"], val_size=0)
    assert report["tta"] == "flip"                       # the default
    check_scores(report, world["model"], ds.test_x, ds.test_y, "flip")
    check_centre(report, world["model"], ds.test_x, ds.test_y)
    # the centre scores are --tta none's (to float32 rounding of batches of other sizes)
    none = run_json(["evaluate", world["ckpt"], "--data", world["cifar"],
                     "--data-dir", world["data_dir"], "--split", "test", "--tta", "none"], capsys)
    assert none["centre"] is None and none["tta"] == "none"
    assert (report["centre"]["top1"], report["centre"]["top5"]) == (none["top1"], none["top5"])
    assert report["centre"]["loss"] == pytest.approx(none["loss"], rel=1e-5)
    assert report["centre"]["loss"] != pytest.approx(report["loss"], rel=1e-3)
    assert report["images"] == 30 and report["classes"] == CLASSES
    assert set(report["per_class"]) == set(CLASSES) and sum(report["counts"].values()) == 30


def test_evaluate_on_the_readable_route_gives_the_same_report(world, capsys):
    argv = ["evaluate", world["ckpt"], "--data", world["cifar"], "--data-dir", world["data_dir"],
            "--split", "test"]
    fast = run_json(argv, capsys)
    readable = run_json(argv + ["--route", "readable"], capsys)
    assert readable["top1"] == fast["top1"] and readable["top5"] == fast["top5"]
    assert readable["loss"] == pytest.approx(fast["loss"], rel=1e-5)


def test_evaluate_val_split_is_carved_out_as_in_training(world, capsys):
    report = run_json(["evaluate", world["ckpt"], "--data", world["cifar"],
                       "--data-dir", world["data_dir"], "--split", "val", "--tta", "flip"],
                      capsys)
    # what the trainer held out: load_dataset with the checkpoint's val_size and seed
    ds = load_dataset(world["cifar"], data_dir=world["data_dir"], val_size=VAL_SIZE, seed=SEED)
    assert report["images"] == VAL_SIZE
    check_scores(report, world["model"], ds.val_x, ds.val_y, "flip")
    other = load_dataset(world["cifar"], data_dir=world["data_dir"], val_size=VAL_SIZE,
                         seed=SEED + 1)
    assert not np.array_equal(other.val_x, ds.val_x)     # so the seed really mattered


def test_evaluate_val_split_honours_limit_val(world, capsys, tmp_path):
    ckpt = write_ckpt(tmp_path / "limited.npz", world["model"],
                      config={"val_size": VAL_SIZE, "seed": SEED, "limit_val": 4})
    report = run_json(["evaluate", ckpt, "--data", world["cifar"],
                       "--data-dir", world["data_dir"], "--split", "val"], capsys)
    ds = load_dataset(world["cifar"], data_dir=world["data_dir"], val_size=VAL_SIZE, seed=SEED)
    assert report["images"] == 4 and "the 4 sampled by --limit-val" in report["data"]
    from tinyalex.data import subset
    x, y = subset(ds.val_x, ds.val_y, 4, SEED, "val")     # the trainer's own sample
    check_scores(report, world["model"], x, y, "flip")
    check_centre(report, world["model"], x, y)


def test_evaluate_agrees_with_the_trainers_own_scores(world):
    """The numbers `evaluate` prints are the ones training logged for the same images."""
    ds = load_dataset(world["cifar"], data_dir=world["data_dir"], val_size=0)
    loader = BatchLoader(ds.test_x, ds.test_y, batch_size=16, train=False, image_size=32,
                         mean=MEAN, std=STD, prefetch=0)
    loss, top1, top5 = score_loader(world["model"], loader)
    result = score_arrays(world["model"], ds.test_x, ds.test_y, mean=MEAN, std=STD)
    assert (result["top1"], result["top5"]) == (top1, top5)
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    # flip TTA too: the trainer mirrors the normalised batch, evaluate the image
    loss, top1, top5 = score_loader(world["model"], loader, tta="flip")
    flip = score_arrays(world["model"], ds.test_x, ds.test_y, mean=MEAN, std=STD, tta="flip")
    assert (flip["top1"], flip["top5"]) == (top1, top5)
    assert flip["loss"] == pytest.approx(loss, rel=1e-5)
    assert flip["loss"] != pytest.approx(result["loss"], rel=1e-3)   # another score


class Confident:
    """A model sure of class 0 whatever it sees (logits 200 apart, or NaN if diverged)."""
    num_classes, input_shape, dtype = 10, (3, 32, 32), np.float32

    def __init__(self, value=200.0):
        self.value = value

    def forward(self, x):
        logits = np.zeros((len(x), 10), np.float32)
        logits[:, 0] = self.value
        return logits


def test_flip_scores_of_a_sure_model_are_finite_and_of_a_diverged_one_nan():
    """exp(-200) underflows to 0 in float32: the mean of the two views' softmax holds zeros,
    whose log is -inf; that must not read as a diverged model's NaN loss."""
    images = np.zeros((6, 32, 32, 3), np.uint8)
    loader = BatchLoader(images, np.array([0, 0, 0, 0, 3, 3]), batch_size=4, train=False,
                         image_size=32, mean=MEAN, std=STD, prefetch=0)
    expected = 2 / 6 * 200.0            # the two label-3 images: -log p = 200 each (float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no "divide by zero encountered in log"
        for tta in ("none", "flip"):
            loss, top1, top5 = score_loader(Confident(), loader, tta=tta)
            assert loss == pytest.approx(expected, rel=1e-3) and top1 == pytest.approx(4 / 6), tta
        result = score_arrays(Confident(), images, np.array([0, 0, 0, 0, 3, 3]), mean=MEAN,
                                 std=STD, tta="flip")
    assert result["top1"] == pytest.approx(4 / 6) and np.isfinite(result["loss"])
    for tta in ("none", "flip"):
        assert np.isnan(score_loader(Confident(np.nan), loader, tta=tta)[0]), tta


def test_evaluate_reproduces_a_training_runs_validation_and_test_scores(world, capsys, tmp_path):
    """A checkpoint written by the real trainer: --split val gives the logged val loss/acc."""
    out = tmp_path / "run"
    code = cli.train_main(["--model", "tiny", "--epochs", "1", "--batch-size", "8",
                           "--val-size", "10", "--seed", "4", "--data", world["cifar"],
                           "--data-dir", world["data_dir"], "--out", str(out), "--no-progress"])
    assert code == 0
    capsys.readouterr()
    last = str(out / "last.npz")
    val = run_json(["evaluate", last, "--data", world["cifar"], "--data-dir", world["data_dir"],
                    "--split", "val"], capsys)
    with open(out / "metrics.csv") as f:
        row = dict(zip(*(line.strip().split(",") for line in f)))
    with open(out / "test.json") as f:
        logged = json.load(f)
    assert val["images"] == 10
    # the validation in training scored the centre image: evaluate --tta none, and the
    # "centre" of the default flip report
    none = run_json(["evaluate", last, "--data", world["cifar"], "--data-dir", world["data_dir"],
                     "--split", "val", "--tta", "none"], capsys)
    for centre in (none, val["centre"]):
        assert centre["top1"] == pytest.approx(float(row["val_acc"]), abs=1e-9)
        assert centre["loss"] == pytest.approx(float(row["val_loss"]), rel=1e-5)
    # and the end of the run scored the final parameters both ways, on both splits
    test = run_json(["evaluate", last, "--data", world["cifar"], "--data-dir", world["data_dir"]],
                    capsys)
    assert logged["headline"] == "test_top1_flip"
    for split, report in (("val", val), ("test", test)):
        assert (report["top1"], report["top5"]) == (logged[f"{split}_top1_flip"],
                                                    logged[f"{split}_top5_flip"]), split
        assert report["loss"] == pytest.approx(logged[f"{split}_loss_flip"], rel=1e-5)
        centre = report["centre"]
        assert (centre["top1"], centre["top5"]) == (logged[f"{split}_top1"], logged[f"{split}_top5"])
        assert centre["loss"] == pytest.approx(logged[f"{split}_loss"], rel=1e-5)


def test_evaluate_single_split_folder_whole_with_a_subset_of_classes(world, capsys):
    png = world["root"] / "confusion.png"
    report = run_json(["evaluate", world["ckpt"], "--data", world["folder"],
                       "--data-dir", world["data_dir"], "--tta", "10crop",
                       "--confusion-png", str(png)], capsys)
    folder = load_dataset(world["folder"], data_dir=world["data_dir"], val_size=0)
    assert folder.classes == ["cat", "ship"]
    labels = np.array([CLASSES.index(folder.classes[y]) for y in folder.train_y])   # 3 and 8
    assert report["images"] == 8 and "all images" in report["data"]
    check_scores(report, world["model"], folder.train_x, labels, "10crop")
    assert report["counts"] == {c: (4 if c in ("cat", "ship") else 0) for c in CLASSES}
    assert report["per_class"]["dog"] is None and report["per_class"]["cat"] is not None
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 200


def test_evaluate_text_leaves_out_rows_of_absent_classes(world, capsys):
    code, out, err = run(["evaluate", world["ckpt"], "--data", world["folder"],
                          "--data-dir", world["data_dir"]], capsys)
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if line.startswith("  ") and
            len(line.split()) == 12]            # index, name and ten counts
    assert [r[:2] for r in rows] == [["3", "cat"], ["8", "ship"]]
    assert "8 class(es) without images left out" in out


# --------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def odd_images(world):
    """Image files of odd sizes and modes, and their RGB content."""
    directory = world["root"] / "odd"
    directory.mkdir()
    rgb, _ = make_images(4, 10, seed=0, size=32)
    specs = [("wide.png", (45, 17), "RGBA"), ("grey.jpg", (100, 60), "L"),
             ("small.png", (7, 7), "P"), ("deep.png", (32, 32), "I;16")]
    paths = []
    for image, (name, size, mode) in zip(rgb, specs):
        picture = to_image(image, mode)
        if picture.size != size:
            picture = picture.resize(size)
        picture.save(directory / name)
        paths.append(str(directory / name))
    return paths


def test_predict_top_k_sorted_probabilities(world, odd_images, capsys):
    report = run_json(["predict", world["ckpt"], *odd_images, "--top", "3"], capsys)
    assert [r["image"] for r in report] == odd_images
    x = load_images(odd_images, 32, MEAN, STD)
    logits = world["model"].forward(x).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    for entry, p in zip(report, probs):
        values = [t["probability"] for t in entry["top"]]
        assert len(values) == 3 and values == sorted(values, reverse=True)
        assert all(0 <= v <= 1 for v in values) and sum(values) <= 1 + 1e-9
        assert [t["class"] for t in entry["top"]] == [CLASSES[j] for j in np.argsort(-p)[:3]]
        np.testing.assert_allclose(values, np.sort(p)[::-1][:3], rtol=1e-6)


def test_predict_text_and_top_larger_than_classes(world, odd_images, capsys):
    report = run_json(["predict", world["ckpt"], odd_images[0], "--top", "50"], capsys)
    assert len(report[0]["top"]) == 10
    assert sum(t["probability"] for t in report[0]["top"]) == pytest.approx(1.0)
    code, out, err = run(["predict", world["ckpt"], *odd_images[:2]], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == odd_images[0] and lines[6] == odd_images[1]   # path, then 5 classes
    assert [line.split()[0] for line in lines[1:6]] == ["1.", "2.", "3.", "4.", "5."]
    assert all(line.endswith("%") for line in lines[1:6])


# --------------------------------------------------------------------------------------
# filters
# --------------------------------------------------------------------------------------

def test_filters_writes_a_png_and_prints_two_scores(world, capsys):
    out_png = world["root"] / "conv1.png"
    code, out, err = run(["filters", world["ckpt"], "--out", str(out_png)], capsys)
    assert code == 0, err
    with Image.open(out_png) as image:
        assert image.format == "PNG"
    scores = [float(line.rsplit(" ", 1)[1]) for line in out.splitlines()
              if line.startswith("tower ") and "colourfulness" in line]
    w = world["model"].params["conv1.w"]
    half = len(w) // 2
    assert scores == pytest.approx([colourfulness(w[:half]).mean(), colourfulness(w[half:]).mean()],
                                   abs=6e-4)
    assert len(out.splitlines()) == 4              # header, two towers, the interpretation


def test_filters_names_the_colour_specific_tower(world, capsys, tmp_path):
    model = build_model("tiny", 10, seed=0)
    w = model.params["conv1.w"]
    w[len(w) // 2:] = w[len(w) // 2:, :1]           # tower 1: the three channels equal (grey)
    code, out, err = run(["filters", write_ckpt(tmp_path / "grey.npz", model),
                          "--out", str(tmp_path / "f.png")], capsys)
    assert code == 0, err
    verdict = out.splitlines()[-1]
    assert "tower 1 is the colour-agnostic one, tower 0 the colour-specific one" in verdict


# --------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit code 2, nothing written
# --------------------------------------------------------------------------------------

def _other_version(world, path):
    with np.load(world["ckpt"]) as z:
        entries = {k: z[k] for k in z.files}
    meta = json.loads(entries["meta"].item())
    meta["format_version"] = 99
    entries["meta"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **entries)


def _bad_checkpoint(world, tmp_path, kind):
    path = tmp_path / f"{kind}.npz"
    if kind == "missing":
        return str(path)
    if kind == "truncated":
        with open(world["ckpt"], "rb") as f:
            data = f.read()
        path.write_bytes(data[:len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"not a checkpoint at all" * 10)
    elif kind == "version":
        _other_version(world, path)
    elif kind == "classes":          # the parameters of a 10-class model, meta says 7
        write_ckpt(path, world["model"], num_classes=7, classes=CLASSES[:7])
    elif kind == "model":
        write_ckpt(path, world["model"], model="resnet")
    return str(path)


@pytest.mark.parametrize("kind, words", [
    ("missing", "checkpoint not found"),
    ("truncated", "not a tinyalex checkpoint"),
    ("garbage", "not a tinyalex checkpoint"),
    ("version", "format version 99"),
    ("classes", "a tiny model with 7 classes needs (7,"),
    ("model", "holds model 'resnet'"),
])
@pytest.mark.parametrize("command", ["evaluate", "predict", "filters"])
def test_bad_checkpoint(world, odd_images, capsys, tmp_path, kind, words, command):
    path = _bad_checkpoint(world, tmp_path, kind)
    extra = {"evaluate": ["--data", world["cifar"], "--data-dir", world["data_dir"]],
             "predict": [odd_images[0]], "filters": ["--out", str(tmp_path / "f.png")]}[command]
    code, out, err = run([command, path, *extra], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and words in err and err.count("\n") == 1
    assert not (tmp_path / "f.png").exists()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_nan_outputs_are_an_error_not_a_score(world, odd_images, capsys, tmp_path, command):
    """Finite weights whose outputs overflow: every row NaN, which argmax reads as class 0."""
    net = build_model("tiny", 10)
    net.params = {k: v * np.float32(1e12) for k, v in world["model"].params.items()}
    path = write_ckpt(tmp_path / "overflow.npz", net)
    extra = {"evaluate": ["--data", world["cifar"], "--data-dir", world["data_dir"]],
             "predict": [odd_images[0]]}[command]
    code, out, err = run([command, path, *extra], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: the model's outputs are NaN or infinite") and "RuntimeWarning" not in err


def test_load_model_raises_checkpoint_error(world, tmp_path):
    with pytest.raises(CheckpointError, match="format version"):
        load_model(_bad_checkpoint(world, tmp_path, "version"))


def test_bad_inputs(world, odd_images, capsys, tmp_path):
    notest = str(tmp_path / "notest")
    write_cifar_batches(notest, per_batch=4, n_test=0)
    unknown = str(tmp_path / "unknown")
    write_image_folder(unknown, classes=["cat", "unicorn"], split=None, per_class=2)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing useful")
    no_val = write_ckpt(tmp_path / "noval.npz", world["model"],
                        config={"val_size": 0, "seed": 0})
    data = ["--data-dir", world["data_dir"]]
    cases = [
        (["predict", world["ckpt"], odd_images[0], str(broken)], f"cannot read image {broken}"),
        (["predict", world["ckpt"], str(tmp_path / "nope.jpg")], "nope.jpg"),
        (["evaluate", world["ckpt"], "--data", unknown, *data], "'unicorn'"),
        (["evaluate", world["ckpt"], "--data", notest, "--split", "test", *data], "no test split"),
        (["evaluate", world["ckpt"], "--data", world["folder"], "--split", "test", *data],
         "no test split"),
        (["evaluate", no_val, "--data", world["cifar"], "--split", "val", *data],
         "without a validation split"),
        (["evaluate", world["ckpt"], "--data", str(tmp_path / "nowhere"), *data],
         "no such file or directory"),
        (["evaluate", world["ckpt"], "--data", world["cifar"], *data,
          "--confusion-png", str(tmp_path / "no" / "c.png")], "does not exist"),
        (["filters", world["ckpt"], "--out", str(tmp_path / "no" / "f.png")], "does not exist"),
    ]
    for argv, words in cases:
        code, out, err = run(argv, capsys)
        assert code == 2 and out == "", argv
        assert err.startswith("error: ") and words in err and err.count("\n") == 1, (argv, err)
    # no --split and no test split: the validation images the run held out, said so
    code, out, err = run(["evaluate", world["ckpt"], "--data", notest, *data], capsys)
    assert code == 0 and "validation split" in out and "the data has no test split" in out, err


def test_predict_on_a_fifo_is_an_error_not_a_hang(world, tmp_path, capsys, no_hang):
    os.mkfifo(tmp_path / "pipe.jpg")
    with no_hang(20):
        code, out, err = run(["predict", world["ckpt"], str(tmp_path / "pipe.jpg")], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: cannot read image {tmp_path / 'pipe.jpg'}: a FIFO, not a regular file")


@pytest.mark.parametrize("argv", [["evaluate", "x.npz", "--batch-size", "0"],
                                  ["evaluate", "x.npz", "--tta", "5crop"],
                                  ["predict", "x.npz", "a.png", "--top", "0"],
                                  ["predict", "x.npz"],
                                  ["filters", "x.npz"]])
def test_bad_flags_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(argv, capsys)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# The real command line, in a subprocess
# --------------------------------------------------------------------------------------

def _python_m_tinyalex(*argv):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "tinyalex", *argv], capture_output=True,
                          text=True, env=env, cwd=repo, timeout=120)


def test_python_m_tinyalex_evaluate_and_a_bad_image(world, tmp_path):
    done = _python_m_tinyalex("evaluate", world["ckpt"], "--data", world["cifar"],
                              "--data-dir", world["data_dir"], "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["images"] == 30 and 0 <= report["top1"] <= report["top5"] <= 1
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff but not a JPEG")
    done = _python_m_tinyalex("predict", world["ckpt"], str(broken))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"error: cannot read image {broken}")
    assert done.stderr.count("\n") == 1


def test_the_confusion_picture_says_which_images_and_which_tta(world, capsys, tmp_path,
                                                                monkeypatch):
    import tinyalex.pictures as pictures
    texts, real = [], pictures.draw_text
    monkeypatch.setattr(pictures, "draw_text",
                        lambda draw, xy, text, **o: texts.append(text) or real(draw, xy, text, **o))
    for tta, words in (("10crop", "10-crop TTA (4 corners + centre, and their mirrors)"),
                       ("none", "no TTA (the centre image)")):
        texts.clear()
        png = tmp_path / f"confusion-{tta}.png"
        report = run_json(["evaluate", world["ckpt"], "--data", world["folder"], "--data-dir",
                           world["data_dir"], "--tta", tta, "--confusion-png", str(png)], capsys)
        subtitle = [t for t in texts if t.endswith(words)]
        assert subtitle == [f"{report['data']}; {words}"] and "all images" in subtitle[0]
