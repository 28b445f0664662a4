"""A newcomer's first hour: a short run learns instead of diverging, the commands on a
checkpoint find the run's own data, and no long wait is silent."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from tinyalex.cli import main, train_main
from tinyalex.data.synthetic import write_cifar_batches, write_image_folder


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A finished tiny run on an image folder (no test split), and that folder."""
    root = tmp_path_factory.mktemp("first-hour")
    images = str(root / "pictures")
    write_image_folder(images, per_class=20, split=None)
    out = str(root / "run")
    assert train_main(["--model", "tiny", "--data", images, "--data-dir", str(root / "cache"),
                       "--val-size", "15", "--batch-size", "15", "--epochs", "1", "--out", out,
                       "--no-progress"]) == 0
    return images, out


def test_evaluate_and_neighbours_use_the_data_the_run_recorded(folder_run, tmp_path, capsys, monkeypatch):
    images, out = folder_run
    monkeypatch.chdir(tmp_path)                  # no ./data here: a download would be tried
    monkeypatch.setenv("TINYALEX_DATA_DIR", str(tmp_path / "nowhere"))
    capsys.readouterr()
    assert main(["evaluate", os.path.join(out, "best.npz"), "--split", "val"]) == 0
    said = capsys.readouterr().out
    assert f"({images})" in said or images in said
    assert "--data and --data-dir as recorded in the checkpoint" in said
    assert main(["neighbours", os.path.join(out, "best.npz"), "--count", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "as recorded in the checkpoint" in report["data"]
    assert not os.path.exists(tmp_path / "nowhere") and not os.path.exists(tmp_path / "data")


def test_recorded_data_that_is_gone_is_one_line(folder_run, tmp_path, capsys):
    images, out = folder_run
    moved = str(tmp_path / "run")
    shutil.copytree(out, moved)
    config_path = os.path.join(moved, "config.json")
    from tinyalex.checkpoint import load_checkpoint, save_checkpoint
    ckpt = load_checkpoint(os.path.join(moved, "best.npz"))
    meta = dict(ckpt.meta)
    meta["config"] = {**meta["config"], "data": str(tmp_path / "gone")}
    save_checkpoint(os.path.join(moved, "best.npz"), params=ckpt.params, optimizer=ckpt.optimizer,
                    arrays=ckpt.arrays, meta=meta)
    assert main(["evaluate", os.path.join(moved, "best.npz")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: the checkpoint was trained on --data {tmp_path / 'gone'}, which is not "
                   f"there any more; pass --data with the images to use\n")
    assert os.path.exists(config_path)


def test_training_records_its_data_as_absolute_paths(folder_run):
    images, out = folder_run
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["data"] == os.path.abspath(images) and os.path.isabs(config["data_dir"])


def test_final_scoring_respects_limit_test_and_shows_progress(tmp_path, capsys):
    data = str(tmp_path / "cifar")
    write_cifar_batches(os.path.join(data, "cifar-10-batches-py"), per_batch=12, n_test=40)
    out = str(tmp_path / "run")
    argv = ["--model", "tiny", "--data", data, "--data-dir", str(tmp_path / "cache"), "--val-size", "20",
            "--batch-size", "10", "--epochs", "1", "--out", out, "--limit-test", "15"]
    from tinyalex import trainer
    seen = []
    real = trainer.score_loader_views

    def spy(model, loader, desc=None, views=("none", "flip")):
        seen.append((desc, len(loader.labels)))
        return real(model, loader, desc, views)
    trainer.score_loader_views = spy
    try:
        assert train_main(argv) == 0
    finally:
        trainer.score_loader_views = real
    assert seen == [("scoring validation", 20), ("scoring test", 15)]
    printed = capsys.readouterr().out
    assert "limited to 40 train / 20 val / 15 test images" in printed
    assert json.load(open(os.path.join(out, "test.json")))["test_top1"] * 15 % 1 == pytest.approx(0, abs=1e-9)


def colour_classes(root, per_class, seed=0):
    """An image folder ROOT/classK/*.png of 10 classes, each a colour plus noise: a task a
    few dozen steps can learn, under the default augmentation (mirrors)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 226, size=(10, 3))
    for c in range(10):
        os.makedirs(os.path.join(root, f"class{c}"))
        for i in range(per_class):
            pixels = np.clip(colours[c] + rng.integers(-30, 31, size=(32, 32, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(root, f"class{c}", f"{i}.png"))
    return root


def test_a_short_run_with_the_default_recipe_learns(tmp_path):
    """The quick run's recipe (the default one-cycle schedule, peak rate, augmentation) at
    reduced size: 4 epochs of 16 steps take the tiny model well above chance (10%). (After 2
    epochs the figure still depends on the seed and the last bit of rounding: 20-70% over
    seeds 0-5; after 4, 60-80%.)"""
    data = colour_classes(str(tmp_path / "colours"), per_class=60)
    out = str(tmp_path / "run")
    assert train_main(["--model", "tiny", "--data", data, "--data-dir", str(tmp_path / "cache"),
                       "--val-size", "100", "--batch-size", "32", "--epochs", "4", "--out", out,
                       "--no-progress"]) == 0
    rows = open(os.path.join(out, "metrics.csv")).read().splitlines()[1:]
    val_acc = [float(r.split(",")[4]) for r in rows]
    assert val_acc[-1] >= 0.4, val_acc


def test_the_readme_python_snippet_runs(tmp_path, capsys, monkeypatch):
    """The README's snippet, as written, on a small trained checkpoint and a sample image."""
    from trained_tiny import fitted_tiny, write_checkpoint
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    readme = open(os.path.join(root, "README.md")).read()
    snippet = readme.split("```python\n", 1)[1].split("```", 1)[0]
    ckpt = write_checkpoint(tmp_path / "best.npz", fitted_tiny())
    monkeypatch.chdir(root)                                    # samples/ is the project's
    exec(snippet.replace("runs/RUN/best.npz", str(ckpt)), {})
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("samples/ship.png [(")
    top = eval(printed[0][len("samples/ship.png "):])
    assert len(top) == 3 and abs(sum(p for _, p in top) - 1) < 1 and all(isinstance(c, str) for c, _ in top)


def test_evaluate_without_split_on_training_images_alone_scores_the_validation_split(tmp_path, capsys):
    """An image folder ROOT/train/ with no test/: the README's evaluate line (no --split)
    scores the validation images the run held out, and says so."""
    images = str(tmp_path / "pictures")
    write_image_folder(images, per_class=20, split="train")
    out = str(tmp_path / "run")
    assert train_main(["--model", "tiny", "--data", images, "--data-dir", str(tmp_path / "cache"),
                       "--val-size", "15", "--batch-size", "15", "--epochs", "1", "--out", out,
                       "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", os.path.join(out, "best.npz")]) == 0
    said = capsys.readouterr().out
    assert "validation split (val_size 15, seed 0); the data has no test split" in said
    assert "flip TTA (image + mirror), 15 images" in said
