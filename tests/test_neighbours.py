"""neighbours: the k nearest training images in fc7's feature space, and the Figure 4 command.

`nearest` (the matrix-product ranking, merged batch by batch) is checked against a brute
force search; an image searched for among the training images finds itself first, at
distance 0 (to float32 rounding); the command is run on an image folder whose test split
holds copies of training images, and on CIFAR batches without a test split.
"""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from tinyalex import cli, neighbours
from tinyalex.data import load_dataset
from tinyalex.data.dataset import split_indices
from tinyalex.data.synthetic import CLASSES, make_images, write_cifar_batches, write_image_folder

from trained_tiny import MEAN, SEED, STD, VAL_SIZE, fitted_tiny, normalise, write_checkpoint


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("neighbours")
    model = fitted_tiny()
    return {"root": root, "model": model, "data_dir": str(root / "data"),
            "ckpt": write_checkpoint(root / "tiny.npz", model)}


def run(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def brute_force(query, train, k):
    d = np.sqrt(((query[:, None, :].astype(np.float64) - train[None]) ** 2).sum(axis=2))
    order = np.lexsort((np.broadcast_to(np.arange(len(train)), d.shape), d), axis=1)[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


def test_nearest_matches_a_brute_force_search():
    rng = np.random.default_rng(0)
    train = rng.standard_normal((50, 16)).astype(np.float32)
    train[31] = train[12]                                   # a tie: the lower index first
    query = np.concatenate([rng.standard_normal((4, 16)), train[[12, 40]]]).astype(np.float32)
    bounds = [0, 7, 10, 30, 50]                             # uneven batches, one smaller than k
    batches = [(a, train[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    found, dist = neighbours.nearest(query, batches, k=6)
    expected, expected_d = brute_force(query, train, 6)
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(dist, expected_d, rtol=1e-6)
    assert found[4, :2].tolist() == [12, 31] and dist[4, 0] == 0 == dist[4, 1]
    assert found[5, 0] == 40 and dist[5, 0] == 0            # exactly 0: the direct difference
    few, few_d = neighbours.nearest(query, [(0, train[:3])], k=6)
    assert (few[:, 3:] == -1).all() and np.isinf(few_d[:, 3:]).all()


def test_a_training_image_finds_itself_at_distance_zero(world):
    model = world["model"]
    train, _ = make_images(60, 10, seed=0)
    picked = [3, 17, 42, 59]
    found, dist = neighbours.nearest_training_images(model, train[picked], train, mean=MEAN,
                                                     std=STD, batch_size=16)
    assert found[:, 0].tolist() == picked
    scale = np.linalg.norm(neighbours.features(model, normalise(train[picked])), axis=1)
    assert (dist[:, 0] <= 1e-5 * scale).all()               # batches of 16 vs 4: float32 rounding
    assert (dist[:, 1] > 1e-2 * scale).all()                # the next one is another image
    assert (np.diff(dist, axis=1) >= 0).all() and found.shape == (4, neighbours.NEIGHBOURS)


def test_pick_queries():
    first = neighbours.pick_queries(100, 8, seed=0)
    assert len(first) == 8 == len(set(first)) and (np.diff(first) > 0).all()
    assert first.tolist() == neighbours.pick_queries(100, 8, seed=0).tolist()
    assert first.tolist() != neighbours.pick_queries(100, 8, seed=1).tolist()
    assert neighbours.pick_queries(5, 8, seed=0).tolist() == [0, 1, 2, 3, 4]
    assert neighbours.pick_queries(100, 8, 0, indices=[9, 2]).tolist() == [9, 2]


@pytest.fixture(scope="module")
def folder(world):
    """ROOT/train/<class>/* of 4 classes, and ROOT/test/ holding a copy of one file per class
    that stays in the training split (the checkpoint's val_size and seed carve the same split
    here)."""
    root = world["root"] / "folder"
    classes = CLASSES[:4]
    images, labels = write_image_folder(str(root), classes=classes, split="train",
                                        per_class=10, seed=0)
    train_idx, _ = split_indices(labels, VAL_SIZE, seed=SEED)
    copies = [train_idx[labels[train_idx] == c][1] for c in range(len(classes))]
    for k in copies:
        name = classes[labels[k]]
        os.makedirs(root / "test" / name, exist_ok=True)
        shutil.copy(root / "train" / name / f"{k:04d}.png", root / "test" / name)  # file k: images[k]
    return {"root": str(root), "copies": images[copies]}


def test_neighbours_command_on_an_image_folder(world, folder, capsys):
    fig = world["root"] / "fig4.png"
    code, out, err = run(["neighbours", world["ckpt"], "--data", folder["root"], "--data-dir",
                          world["data_dir"], "--out", str(fig), "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    ds = load_dataset(folder["root"], data_dir=world["data_dir"], val_size=VAL_SIZE, seed=SEED)
    assert report["training_images"] == len(ds.train_y) == 30 and "test split" in report["data"]
    assert len(report["queries"]) == 4                      # --count 8, but the split has 4
    for entry in report["queries"]:
        query = ds.test_x[entry["index"]]
        assert entry["label"] == ds.classes[ds.test_y[entry["index"]]]
        first = entry["neighbours"][0]
        assert np.array_equal(ds.train_x[first["index"]], query)   # the copy finds its original
        assert first["distance"] < 1e-3 and first["label"] == entry["label"]
        distances = [n["distance"] for n in entry["neighbours"]]
        assert len(distances) == 6 and distances == sorted(distances) and distances[1] > 1e-2
        for n in entry["neighbours"]:
            assert n["label"] == CLASSES[ds.train_y[n["index"]]]
        p = [t["probability"] for t in entry["top5"]]
        assert len(p) == 5 and p == sorted(p, reverse=True) and sum(p) <= 1 + 1e-6
    with Image.open(fig) as picture:
        assert picture.format == "PNG" and picture.size[0] > picture.size[1] > 300


def test_neighbours_command_on_cifar_batches_without_a_test_split(world, capsys):
    cifar = str(world["root"] / "cifar-10-batches-py")
    write_cifar_batches(cifar, per_batch=10, n_test=0, seed=0)
    code, out, err = run(["neighbours", world["ckpt"], "--data", cifar, "--data-dir",
                          world["data_dir"], "--indices", "0,3", "--limit-train", "25"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert "val split as queries (10 images)" in lines[1]      # no test split: the held-out ones
    assert lines[2].startswith("searched 25 training images in ")
    assert lines[3].startswith("query 0 (") and lines[5].startswith("query 3 (")
    assert lines[4].startswith("  nearest: ") and lines[4].count(",") == 5


def test_neighbours_bad_input(world, folder, capsys, tmp_path):
    cifar = str(world["root"] / "cifar-10-batches-py")
    unknown = str(tmp_path / "unknown")
    write_image_folder(unknown, classes=["cat", "unicorn"], split="train", per_class=8)
    data = ["--data-dir", world["data_dir"]]
    cases = [
        (["neighbours", str(tmp_path / "none.npz"), "--data", cifar, *data], "checkpoint not found"),
        (["neighbours", world["ckpt"], "--data", cifar, *data, "--out", str(tmp_path / "no" / "f.png")],
         "does not exist"),
        (["neighbours", world["ckpt"], "--data", cifar, *data, "--split", "test"], "no test split"),
        (["neighbours", world["ckpt"], "--data", unknown, *data], "'unicorn'"),
        (["neighbours", world["ckpt"], "--data", folder["root"], *data, "--indices", "1,7"],
         "--indices 7 is out of range: the split has 4 images"),
    ]
    for argv, words in cases:
        code, out, err = run(argv, capsys)
        assert code == 2 and out == "", argv
        assert err.startswith("error: ") and words in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("split, name", [("val", "validation"), ("test", "test")])
def test_the_figure_names_the_split_of_its_queries_and_says_what_red_means(
        world, folder, capsys, tmp_path, monkeypatch, split, name, drawn_texts):
    texts = drawn_texts()
    fig = tmp_path / "fig4.png"
    code, out, err = run(["neighbours", world["ckpt"], "--data", folder["root"], "--data-dir",
                          world["data_dir"], "--split", split, "--count", "2", "--out", str(fig)],
                         capsys)
    assert code == 0, err
    assert f"{name} images and their top labels" in texts and f"{name} image" in texts
    other = "test" if split == "val" else "validation"
    assert not any(t.startswith(other) for t in texts)
    legend = [t for t in texts if t.startswith("red bar: the correct label")]
    assert len(legend) == 1 and "red underline: a neighbour of the query's class" in legend[0]
