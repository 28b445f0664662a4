"""Hostile inputs: names with control characters, damaged caches, images and checkpoints made to
cost time or memory, a model whose outputs are NaN, running out of memory, no network.

Each is refused (or survived) with one line, never a traceback or a raw warning, and leaves
nothing behind that the command made.
"""

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from tinyalex import cli
from tinyalex.data.synthetic import CLASSES, make_images

from test_mpi import environment, mpiexec, needs_mpi
from trained_tiny import fitted_tiny, write_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NEWLINE_CLASSES = ["air\nplane", "auto\tmobile", *CLASSES[2:]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.npz", fitted_tiny())


def run(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, *words):
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err


# --------------------------------------------------------------------------------------
# A newline in a class or file name: every picture's labels (pictures.draw_text)
# --------------------------------------------------------------------------------------

def test_pictures_draw_names_with_control_characters(tmp_path):
    from tinyalex.neighbours import figure4_png
    from tinyalex.pictures import confusion_png
    matrix = np.arange(100).reshape(10, 10)
    confusion_png(matrix, NEWLINE_CLASSES, tmp_path / "confusion.png")
    images, labels = make_images(2, 10, seed=0)
    top = [[(0, 0.7), (1, 0.2)], [(1, 0.6), (0, 0.3)]]
    figure4_png(images, labels, top, np.stack([images, images], 1), np.array([[0, 1], [1, 0]]),
                NEWLINE_CLASSES, tmp_path / "fig4.png")
    for name in ("confusion.png", "fig4.png"):
        with Image.open(tmp_path / name) as picture:
            assert picture.format == "PNG"


def test_saliency_of_an_image_whose_name_holds_a_newline(checkpoint, tmp_path, capsys):
    image = tmp_path / "two\nlines.png"
    Image.fromarray(make_images(1, 10, seed=0)[0][0]).save(image)
    code, out, err = run(["saliency", checkpoint, str(image), "--out", str(tmp_path / "maps")],
                         capsys)
    assert code == 0, err
    assert os.listdir(tmp_path / "maps") == ["two\nlines.png"]


# --------------------------------------------------------------------------------------
# A damaged image cache is checked for what it holds, and rebuilt
# --------------------------------------------------------------------------------------

def test_a_cache_with_labels_out_of_range_is_rebuilt(tmp_path, capsys):
    from tinyalex.data.folder import load_image_folder
    from tinyalex.data.synthetic import write_image_folder
    write_image_folder(str(tmp_path / "images"), per_class=3, split=None)
    cache_dir = str(tmp_path / "cache")
    first = load_image_folder(str(tmp_path / "images"), cache_dir=cache_dir)
    (cache,) = os.listdir(cache_dir)
    labels = os.path.join(cache_dir, cache, "train_y.npy")
    np.save(labels, np.full_like(np.load(labels), 99))        # damaged: classes 0..2 only
    capsys.readouterr()
    again = load_image_folder(str(tmp_path / "images"), cache_dir=cache_dir)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is damaged (train labels outside 0..2)" in err, err
    np.testing.assert_array_equal(again[1], first[1])
    np.testing.assert_array_equal(again[0], first[0])
    np.testing.assert_array_equal(np.load(labels), first[1])   # the rebuilt cache


# --------------------------------------------------------------------------------------
# Out of memory: one line naming the batch size, the run directory as docs/runs.md promises
# --------------------------------------------------------------------------------------

def exhaust_memory(*args, **kwargs):
    """What NumPy raises when an array does not fit (its _ArrayMemoryError)."""
    return np.empty(1 << 58, np.uint8)


def test_evaluate_out_of_memory_is_one_line(checkpoint, data, monkeypatch, capsys):
    from tinyalex.model import AlexNet
    monkeypatch.setattr(AlexNet, "forward", exhaust_memory)
    code, out, err = run(["evaluate", checkpoint, "--data", data, "--batch-size", "7"], capsys)
    one_line_error(code, err, "out of memory at batch size 7 (could not allocate 256 PiB)",
                   "--batch-size 3")


def test_train_out_of_memory_keeps_the_last_checkpoint(data, tmp_path, monkeypatch, capsys):
    from tinyalex.checkpoint import read_meta
    from tinyalex.cli import train_main
    from tinyalex.model import AlexNet
    loss, calls = AlexNet.loss, []

    def loss_until_epoch_two(self, *args, **kwargs):      # 6 steps an epoch
        calls.append(1)
        return exhaust_memory() if len(calls) > 8 else loss(self, *args, **kwargs)
    monkeypatch.setattr(AlexNet, "loss", loss_until_epoch_two)
    out = str(tmp_path / "run")
    code = train_main(["--model", "tiny", "--data", data, "--data-dir", str(tmp_path / "cache"),
                       "--val-size", "30", "--batch-size", "15", "--epochs", "3", "--out", out,
                       "--no-progress"])
    one_line_error(code, capsys.readouterr().err, "out of memory at batch size 15")
    assert read_meta(os.path.join(out, "last.npz"))["epoch"] == 1
    assert sorted(os.listdir(out)) == ["best.npz", "config.json", "curves.png", "last.npz",
                                       "metrics.csv"]                 # and no .lock


def test_train_out_of_memory_under_an_address_space_limit(tmp_path):
    """As found: `ulimit -v`, the cifar model at batch 870. 2 GB lets one thread start and
    train small batches (about 1 GB); a batch of 870 needs 2.5 GB."""
    import resource
    import subprocess
    import sys
    from tinyalex.data.synthetic import write_cifar_batches
    write_cifar_batches(str(tmp_path / "data" / "cifar-10-batches-py"), per_batch=180, n_test=0)
    limit = 2000 << 20

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), "--model", "cifar", "--data",
         str(tmp_path / "data"), "--data-dir", str(tmp_path / "cache"), "--val-size", "20",
         "--batch-size", "870", "--limit-val", "8", "--epochs", "1", "--threads", "1",
         "--out", str(out), "--no-progress"],
        preexec_fn=limited, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr[-3000:]
    assert done.stderr.startswith("error: out of memory at batch size 870 (could not allocate ")
    assert "--batch-size 435" in done.stderr
    assert not out.exists()              # failed before its first checkpoint: removed


@needs_mpi
def test_mpi_ranks_out_of_memory_say_it_in_one_line(tmp_path):
    """The same on two MPI ranks (data parallel, 435 images each), rank 0 saying it once."""
    import resource
    from tinyalex.data.synthetic import write_cifar_batches
    write_cifar_batches(str(tmp_path / "data" / "cifar-10-batches-py"), per_batch=180, n_test=0)
    limit = 2000 << 20

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    done = mpiexec(2, [os.path.join(ROOT, "train.py"), "--model", "cifar", "--data",
                       str(tmp_path / "data"), "--data-dir", str(tmp_path / "cache"),
                       "--val-size", "20", "--batch-size", "870", "--limit-val", "8",
                       "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"],
                   timeout=120, env=environment(threads=1), preexec_fn=limited)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.count("\n") == 1, done.stderr[-3000:]
    assert done.stderr.startswith("error: out of memory at batch size 870 (could not allocate ")


# --------------------------------------------------------------------------------------
# Image files: empty, NaN pixels, too many pixels (data.folder.read_image, for every command)
# --------------------------------------------------------------------------------------

def png_header_only(path, width, height):
    """A PNG that says it is width x height (RGB) and holds one row: what Pillow opens."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                                  0, 0, 0))
                + chunk(b"IDAT", zlib.compress(b"\0" * (3 * width + 1))) + chunk(b"IEND", b""))


def refused(path, *words):
    """read_image(path) raises a one-line DataError holding `words`, and warns nothing."""
    from tinyalex.data.folder import read_image
    from tinyalex.errors import DataError
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError) as e:
            read_image(str(path))
    assert not caught, [str(w.message) for w in caught]
    for word in words:
        assert word in str(e.value), str(e.value)
    return str(e.value)


def test_an_empty_image_file_is_named(tmp_path, checkpoint, capsys):
    empty = tmp_path / "new\nline.png"
    empty.write_bytes(b"")
    message = refused(empty, "the file is empty")
    assert "BufferedReader" not in message
    code, out, err = run(["predict", checkpoint, str(empty)], capsys)
    one_line_error(code, err, f"{tmp_path}/new\\nline.png", "the file is empty")


def test_a_file_that_is_no_image_says_so(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert "BufferedReader" not in refused(text, "not an image file Pillow can read")


def test_nan_and_infinite_pixels_are_refused(tmp_path):
    for value in (np.nan, np.inf):
        pixels = np.full((8, 8), 0.5, np.float32)
        pixels[3, 4] = value
        Image.fromarray(pixels, "F").save(tmp_path / "float.tif")
        refused(tmp_path / "float.tif", "NaN or infinite pixel values")


def test_an_image_of_too_many_pixels_is_refused_before_decoding(tmp_path):
    for side in (10000, 20000):             # above Pillow's warning, and above its error
        png_header_only(tmp_path / "huge.png", side, side)
        refused(tmp_path / "huge.png", "more than the 50 megapixels tinyalex decodes")
    png_header_only(tmp_path / "wide.png", 8000, 7000)        # 56 MP: below Pillow's limits
    refused(tmp_path / "wide.png", "it is 8000x7000 pixels")


# --------------------------------------------------------------------------------------
# A checkpoint whose zip holds a huge entry: refused from the zip's directory, unread
# --------------------------------------------------------------------------------------

def with_entry(checkpoint, path, name, header=b""):
    """A copy of `checkpoint` plus (or with, in place of its own) entry `name`: `header` then
    zeros up to 50 MB, deflated to 50 kB."""
    import zipfile
    with zipfile.ZipFile(checkpoint) as source, \
            zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename != name:
                target.writestr(info.filename, source.read(info))
        with target.open(name, "w", force_zip64=True) as f:
            f.write(header)
            for _ in range(50):
                f.write(bytes(1 << 20))
    return str(path)


def npy_header(shape):
    import io
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False,
                                                  "shape": shape})
    return buffer.getvalue()


@pytest.fixture
def bytes_decompressed(monkeypatch):
    """The number of bytes read from zip entries so far (a list of one number)."""
    import zipfile
    read, total = zipfile.ZipExtFile.read, [0]

    def counting(self, n=-1):
        data = read(self, n)
        total[0] += len(data)
        return data
    monkeypatch.setattr(zipfile.ZipExtFile, "read", counting)
    return total


def test_an_unexpected_huge_entry_is_refused_unread(checkpoint, tmp_path, capsys,
                                                   bytes_decompressed):
    bomb = with_entry(checkpoint, tmp_path / "bomb.npz", "junk.npy")
    assert os.path.getsize(bomb) < 1 << 20
    code, out, err = run(["filters", bomb, "--out", str(tmp_path / "f.png")], capsys)
    one_line_error(code, err, "unexpected entry 'junk'")
    assert bytes_decompressed[0] < 1 << 20


def test_a_parameter_entry_larger_than_its_shape_is_refused_unread(checkpoint, tmp_path, capsys,
                                                                 bytes_decompressed):
    bomb = with_entry(checkpoint, tmp_path / "bomb.npz", "param/fc8.w.npy",
                      npy_header(((50 << 20) // 4,)))
    code, out, err = run(["evaluate", bomb, "--data", str(tmp_path)], capsys)
    one_line_error(code, err, "its entry param/fc8.w would take 52,428,")
    assert bytes_decompressed[0] < 1 << 20


# --------------------------------------------------------------------------------------
# A model whose outputs overflow to NaN: one line, no warnings, no empty --out folder
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def overflowing(tmp_path_factory):
    """A checkpoint of finite weights (so it loads) whose outputs are NaN: each layer x 1e12."""
    model = fitted_tiny()
    for key in model.params:
        if key.endswith(".w"):
            model.params[key] = model.params[key] * np.float32(1e12)
    return write_checkpoint(tmp_path_factory.mktemp("nan") / "nan.npz", model)


def run_quietly(argv, capsys):
    """run(), failing on any warning (a RuntimeWarning of NumPy, say)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(argv, capsys)
    assert not caught, [str(w.message) for w in caught]
    return result


def test_saliency_of_nan_outputs_is_one_line_and_leaves_no_folder(overflowing, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(make_images(1, 10, seed=0)[0][0]).save(image)
    code, out, err = run_quietly(["saliency", overflowing, str(image), "--out",
                                  str(tmp_path / "maps" / "new")], capsys)
    one_line_error(code, err, "the model's outputs are NaN or infinite")
    assert sorted(os.listdir(tmp_path)) == ["x.png"]


def test_export_of_nan_outputs_says_so(overflowing, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")       # the check that meets the NaN needs it
    code, out, err = run_quietly(["export", overflowing, str(tmp_path / "m.onnx")], capsys)
    one_line_error(code, err, "the model's outputs are NaN or infinite")
    assert "disagree" not in err and os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------
# No network: the --data-dir the download made is removed again
# --------------------------------------------------------------------------------------

def test_evaluate_without_network_leaves_no_data_dir(checkpoint, tmp_path, monkeypatch, capsys):
    from tinyalex.data import cifar
    monkeypatch.setattr(cifar, "CIFAR10_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    data_dir = tmp_path / "new" / "data"
    code, out, err = run(["evaluate", checkpoint, "--data-dir", str(data_dir)], capsys)
    one_line_error(code, err, "cannot reach http://127.0.0.1:9/")
    assert os.listdir(tmp_path) == []
