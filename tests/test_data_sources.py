"""Pickle batches, image folders (and their cache), archives, split and statistics."""
import argparse
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from tinyalex.data import add_data_arguments, cifar, folder, load_dataset
from tinyalex.data.dataset import channel_statistics, split_indices
from tinyalex.data.synthetic import (make_images, to_image, write_cifar_archive,
                                     write_cifar_batches, write_image_folder)
from tinyalex.errors import DataError


# --- the official pickle batches ------------------------------------------------------

@pytest.fixture
def batches(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    return root, write_cifar_batches(str(root), per_batch=4, n_test=6)


def test_pickle_batches_load_as_nhwc(batches, tmp_path):
    root, arrays = batches
    ds = load_dataset(str(root), data_dir=str(tmp_path / "d"), val_size=0)
    np.testing.assert_array_equal(ds.train_x, arrays["train_x"])
    np.testing.assert_array_equal(ds.train_y, arrays["train_y"])
    np.testing.assert_array_equal(ds.test_x, arrays["test_x"])
    assert ds.classes == arrays["classes"] and ds.train_x.dtype == np.uint8
    assert ds.train_y.dtype == np.int64 and ds.train_x.shape == (20, 32, 32, 3)
    # independent of the writer: row layout is 1024 red, 1024 green, 1024 blue values
    with open(root / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"]
    assert ds.train_x[0, 0, 1, 0] == raw[0, 1]          # red, row 0, column 1
    assert ds.train_x[0, 0, 0, 1] == raw[0, 1024]       # green, row 0, column 0
    assert ds.train_x[0, 1, 0, 2] == raw[0, 2048 + 32]  # blue, row 1, column 0
    # a directory holding cifar-10-batches-py works too
    again = load_dataset(str(tmp_path), data_dir=str(tmp_path / "d"), val_size=0)
    np.testing.assert_array_equal(again.train_x, ds.train_x)


def test_files_use_numpy1_module_names_like_the_official_ones(batches):
    root, _ = batches
    assert b"numpy.core.multiarray" in (root / "data_batch_1").read_bytes()


def _rewrite(path, change):
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    change(d)
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


def test_a_class_name_listed_twice_is_refused(batches, tmp_path):
    root, _ = batches
    names = [c.encode() for c in ["cat", "dog", "cat"] + [f"c{i}" for i in range(7)]]
    _rewrite(root / "batches.meta", lambda d: d.update({b"label_names": names}))
    with pytest.raises(DataError, match="lists class name.*'cat' more than once"):
        load_dataset(str(root), data_dir=str(tmp_path / "d"))


@pytest.mark.parametrize("damage, message", [
    ("missing", "missing CIFAR-10 batch files: data_batch_3"),
    ("missing_meta", "missing CIFAR-10 batch files: batches.meta"),
    ("truncated", "truncated or corrupt"),
    ("garbage", "truncated or corrupt"),
    ("shape", r"shape \(4, 3000\).*expected \(N, 3072\) uint8"),
    ("dtype", "dtype float32"),
    ("label_range", "label 10 out of range 0..9"),
    ("label_count", "3 labels for 4 images"),
    ("not_a_batch", "not a CIFAR-10 batch"),
])
def test_bad_pickle_batches(batches, tmp_path, damage, message):
    root, _ = batches
    path = root / "data_batch_3"
    if damage == "missing":
        path.unlink()
    elif damage == "missing_meta":
        (root / "batches.meta").unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "garbage":
        path.write_bytes(b"\x80\x02garbage" * 100)
    elif damage == "shape":
        _rewrite(path, lambda d: d.update({b"data": d[b"data"][:, :3000]}))
    elif damage == "dtype":
        _rewrite(path, lambda d: d.update({b"data": d[b"data"].astype(np.float32)}))
    elif damage == "label_range":
        _rewrite(path, lambda d: d[b"labels"].__setitem__(1, 10))
    elif damage == "label_count":
        _rewrite(path, lambda d: d.update({b"labels": d[b"labels"][:3]}))
    elif damage == "not_a_batch":
        _rewrite(path, lambda d: d.pop(b"data"))
    with pytest.raises(DataError, match=message) as e:
        load_dataset(str(root), data_dir=str(tmp_path / "d"))
    assert "\n" not in str(e.value)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch evil-was-run",))


def test_pickle_with_foreign_code_is_refused(batches, tmp_path, monkeypatch):
    root, _ = batches
    monkeypatch.chdir(tmp_path)
    with open(root / "data_batch_2", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(DataError, match="unexpected object posix.system"):
        load_dataset(str(root), data_dir=str(tmp_path / "d"))
    assert not (tmp_path / "evil-was-run").exists()


def test_archive_path_is_unpacked_once_into_data_dir(tmp_path, monkeypatch):
    md5, arrays = write_cifar_archive(str(tmp_path / "cifar-10-python.tar.gz"), per_batch=4)
    data_dir = tmp_path / "d"
    ds = load_dataset(str(tmp_path / "cifar-10-python.tar.gz"), data_dir=str(data_dir), val_size=0)
    np.testing.assert_array_equal(ds.train_x, arrays["train_x"])
    assert (data_dir / "cifar-10-python" / "cifar-10-batches-py" / "test_batch").exists()

    def no_extract(*args):
        raise AssertionError("unpacked twice")
    monkeypatch.setattr("tinyalex.data.dataset.safe_extract", no_extract)
    again = load_dataset(str(tmp_path / "cifar-10-python.tar.gz"), data_dir=str(data_dir),
                         val_size=0)
    np.testing.assert_array_equal(again.train_x, ds.train_x)


def test_image_folder_archive(tmp_path):
    write_image_folder(str(tmp_path / "src"), per_class=3)
    with tarfile.open(tmp_path / "pics.tgz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "train", arcname="train")
    ds = load_dataset(str(tmp_path / "pics.tgz"), data_dir=str(tmp_path / "d"), val_size=0)
    assert ds.train_x.shape == (9, 32, 32, 3) and ds.classes == ["airplane", "automobile", "bird"]


def test_corrupt_archive_path_leaves_nothing_behind(tmp_path):
    write_cifar_archive(str(tmp_path / "c.tar.gz"), per_batch=4)
    data = (tmp_path / "c.tar.gz").read_bytes()
    (tmp_path / "c.tar.gz").write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset(str(tmp_path / "c.tar.gz"), data_dir=str(tmp_path / "d"))
    assert not os.path.exists(tmp_path / "d")        # the data directory it made, removed
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset(str(tmp_path / "c.tar.gz"), data_dir=str(tmp_path / "d"))
    assert os.listdir(tmp_path / "d") == []          # one that was there stays


def test_archive_does_not_overwrite_a_folder_it_did_not_make(tmp_path):
    write_cifar_archive(str(tmp_path / "c.tar.gz"), per_batch=4)
    (tmp_path / "d" / "c").mkdir(parents=True)
    (tmp_path / "d" / "c" / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="already exists and was not made by tinyalex"):
        load_dataset(str(tmp_path / "c.tar.gz"), data_dir=str(tmp_path / "d"))
    assert (tmp_path / "d" / "c" / "mine.txt").read_text() == "keep me"


def test_archive_with_a_data_dir_that_cannot_be_written(tmp_path, unwritable_dir):
    write_cifar_archive(str(tmp_path / "c.tar.gz"), per_batch=4)
    (tmp_path / "a-file").write_text("not a directory")
    for data_dir, words in [(str(tmp_path / "a-file" / "under"), "Not a directory"),
                            (unwritable_dir, "pass a writable directory as --data-dir")]:
        with pytest.raises(DataError, match=f"cannot unpack .*c.tar.gz into --data-dir .*{words}"):
            load_dataset(str(tmp_path / "c.tar.gz"), data_dir=data_dir)
    for data in (str(tmp_path / "c.tar.gz"), None):         # a file: refused before anything
        with pytest.raises(DataError, match="--data-dir .*a-file is a file, not a directory; choose another"):
            load_dataset(data, data_dir=str(tmp_path / "a-file"))


def test_missing_path_and_unsupported_file(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        load_dataset(str(tmp_path / "nope"), data_dir=str(tmp_path))
    (tmp_path / "x.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match="expected a directory or a .tar.gz"):
        load_dataset(str(tmp_path / "x.zip"), data_dir=str(tmp_path))


# --- image folders ---------------------------------------------------------------------

def test_image_folder_of_many_formats_modes_and_sizes(tmp_path):
    root = tmp_path / "pics"
    rgb, labels = write_image_folder(str(root), per_class=2, classes=["b_png", "a_png"],
                                     ext="png")
    cases = {"c_gray": ("png", "L"), "d_rgba": ("png", "RGBA"), "e_pal": ("png", "P"),
             "f_16bit": ("png", "I;16"), "g_jpeg": ("jpg", "RGB"), "h_jpeg_gray": ("jpg", "L"),
             "i_bmp": ("bmp", "RGB")}
    for k, (name, (ext, mode)) in enumerate(cases.items()):
        write_image_folder(str(root), per_class=2, classes=[name], ext=ext, mode=mode,
                           seed=10 + k)
    big, _ = write_image_folder(str(root), per_class=2, classes=["j_big"], size=48, seed=30)
    odd = root / "train" / "k_odd"
    odd.mkdir()
    Image.new("RGB", (50, 20), (200, 10, 30)).save(odd / "wide.png")
    (odd / "notes.txt").write_text("not an image, ignored")
    (odd / ".hidden.png").write_bytes(b"ignored too")

    ds = load_dataset(str(root), data_dir=str(tmp_path / "d"), val_size=0)
    assert ds.classes == sorted(["a_png", "b_png", *cases, "j_big", "k_odd"])
    assert ds.train_x.shape == (21, 32, 32, 3) and ds.test_x is None
    by_class = {c: ds.train_x[ds.train_y == i] for i, c in enumerate(ds.classes)}
    # 'a_png' sorts first, so it is label 0 although it was written second
    np.testing.assert_array_equal(by_class["a_png"], rgb[labels == 1])
    def written(name):                   # what write_image_folder drew for that class
        k = list(cases).index(name)
        return make_images(2, 1, seed=10 + k)[0]

    def as_grey(images):
        return np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in images])

    for name in ("c_gray", "f_16bit"):      # grey, 8-bit and 16-bit: R = G = B = grey value
        np.testing.assert_array_equal(by_class[name], as_grey(written(name))[..., None].repeat(3, -1))
    np.testing.assert_array_equal(by_class["d_rgba"], written("d_rgba"))   # alpha dropped
    np.testing.assert_array_equal(by_class["i_bmp"], written("i_bmp"))
    palette = np.stack([np.asarray(to_image(im, "P").convert("RGB")) for im in written("e_pal")])
    np.testing.assert_array_equal(by_class["e_pal"], palette)                # its 256 colours
    jpeg, truth = by_class["g_jpeg"].astype(float), written("g_jpeg").astype(float)
    # lossy (and these images are mostly per-pixel noise): the colours survive on average
    assert np.abs(jpeg.mean(axis=(1, 2)) - truth.mean(axis=(1, 2))).max() < 3
    luma = np.array([0.299, 0.587, 0.114])             # JPEG keeps brightness at full resolution
    assert np.corrcoef((jpeg @ luma).ravel(), (truth @ luma).ravel())[0, 1] > 0.9
    assert (by_class["k_odd"][0] == [200, 10, 30]).all()
    assert by_class["j_big"].shape == (2, 32, 32, 3)
    resized = np.asarray(Image.fromarray(big[0]).resize((32, 32), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(by_class["j_big"][0], resized)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    grey = np.array([[0, 257 * 100, 65535]], np.uint16).repeat(32, 0)
    grey = np.pad(grey, ((0, 0), (0, 29)))
    Image.fromarray(grey).save(tmp_path / "g.png")                # mode I;16
    out = folder.read_image(str(tmp_path / "g.png"))
    assert out[0, :3, 0].tolist() == [0, 100, 255]


def test_train_and_test_folders(tmp_path):
    root = tmp_path / "pics"
    write_image_folder(str(root), per_class=3, split="train")
    test_x, test_y = write_image_folder(str(root), per_class=2, split="test", seed=5)
    ds = load_dataset(str(root), data_dir=str(tmp_path / "d"), val_size=3)
    np.testing.assert_array_equal(ds.test_x, test_x)
    np.testing.assert_array_equal(ds.test_y, test_y)
    assert len(ds.train_y) == 6 and len(ds.val_y) == 3


def test_single_split_folder(tmp_path):
    write_image_folder(str(tmp_path / "pics"), per_class=2, split=None)
    ds = load_dataset(str(tmp_path / "pics"), data_dir=str(tmp_path / "d"), val_size=0)
    assert ds.test_x is None and len(ds.train_y) == 6


@pytest.mark.parametrize("layout, message", [
    ("empty", "no class folders"),
    ("files_only", "no class folders"),
    ("no_images", "class folder .*cat has no images"),
    ("test_only", "has a test/ folder but no train/"),
    ("class_mismatch", "different classes .*only in train: bird; only in test: cow"),
])
def test_bad_image_folders(tmp_path, layout, message):
    root = tmp_path / "pics"
    root.mkdir()
    if layout == "files_only":
        Image.new("RGB", (32, 32)).save(root / "loose.png")
    elif layout == "no_images":
        (root / "cat").mkdir()
        (root / "cat" / "readme.txt").write_text("hi")
    elif layout == "test_only":
        write_image_folder(str(root), per_class=1, split="test")
    elif layout == "class_mismatch":
        write_image_folder(str(root), per_class=1, split="train")
        write_image_folder(str(root), per_class=1, split="test",
                           classes=["airplane", "automobile", "cow"])
    with pytest.raises(DataError, match=message) as e:
        load_dataset(str(root), data_dir=str(tmp_path / "d"))
    assert "\n" not in str(e.value)


def _add_bad_files(root, n):
    for k in range(n):
        (root / "train" / "bird" / f"bad{k}.png").write_bytes(b"not a png at all")


def test_unreadable_images_fail_listing_the_first_few(tmp_path):
    root = tmp_path / "pics"
    write_image_folder(str(root), per_class=3)
    _add_bad_files(root, 5)
    with pytest.raises(DataError) as e:
        load_dataset(str(root), data_dir=str(tmp_path / "d"))
    message = str(e.value)
    assert "5 unreadable image file(s)" in message and "--skip-bad-images" in message
    assert "bad0.png, " in message and "and 2 more" in message and "\n" not in message
    # the failure is cached like the images: the second run fails the same way
    with pytest.raises(DataError, match="5 unreadable"):
        load_dataset(str(root), data_dir=str(tmp_path / "d"))


def test_skip_bad_images_warns_and_keeps_the_rest(tmp_path, capsys):
    root = tmp_path / "pics"
    write_image_folder(str(root), per_class=3)
    _add_bad_files(root, 2)
    (root / "train" / "bird" / "cut.jpg").write_bytes(
        (root / "train" / "bird" / "0006.png").read_bytes()[:60])
    ds = load_dataset(str(root), data_dir=str(tmp_path / "d"), val_size=0,
                      skip_bad_images=True)
    assert len(ds.train_y) == 9 and np.bincount(ds.train_y).tolist() == [3, 3, 3]
    assert "warning: skipped 3 unreadable image file(s)" in capsys.readouterr().err


@pytest.fixture
def pics(tmp_path):
    root = tmp_path / "pics"
    write_image_folder(str(root), per_class=3)
    return root


def test_links_back_up_the_tree_are_not_followed(pics, tmp_path, capsys):
    plain = load_dataset(str(pics), data_dir=str(tmp_path / "d"), val_size=0)
    bird = pics / "train" / "bird"
    (bird / "loop").symlink_to("..")                 # the train/ folder, all classes again
    (bird / "self").symlink_to(".")
    (pics / "train" / "up").symlink_to("..")         # a "class" that is the root
    (bird / "sub").mkdir()                           # a real subfolder, and a link into it,
    (bird / "0006.png").rename(bird / "sub" / "0006.png")
    (bird / "again").symlink_to("sub")               # read once, not twice
    ds = load_dataset(str(pics), data_dir=str(tmp_path / "d2"), val_size=0)
    assert ds.classes == plain.classes
    np.testing.assert_array_equal(np.bincount(ds.train_y), np.bincount(plain.train_y))
    err = capsys.readouterr().err
    assert "not following 4 link(s) back to a folder already read" in err
    assert "train/bird/loop" in err and "train/up" in err and "\n" not in err.strip()


@pytest.mark.parametrize("skip", [False, True])
def test_fifos_and_broken_links_are_unreadable_images_never_opened(pics, tmp_path, capsys,
                                                                   no_hang, skip):
    bird = pics / "train" / "bird"
    os.mkfifo(bird / "pipe.jpg")                     # opening it would wait for a writer
    (bird / "a.jpg").symlink_to("b.jpg")             # a loop of two links
    (bird / "b.jpg").symlink_to("a.jpg")
    (bird / "gone.jpg").symlink_to("nothing-here.jpg")
    with no_hang(20):
        if not skip:
            with pytest.raises(DataError) as e:
                load_dataset(str(pics), data_dir=str(tmp_path / "d"))
            message = str(e.value)
            assert "4 unreadable image file(s)" in message and "--skip-bad-images" in message
            assert "train/bird/a.jpg, train/bird/b.jpg, train/bird/gone.jpg" in message
            return
        ds = load_dataset(str(pics), data_dir=str(tmp_path / "d"), val_size=0,
                          skip_bad_images=True)
    assert np.bincount(ds.train_y).tolist() == [3, 3, 3]
    assert "skipped 4 unreadable image file(s)" in capsys.readouterr().err


def test_read_image_refuses_what_is_not_a_regular_file(tmp_path, no_hang):
    os.mkfifo(tmp_path / "pipe.png")
    with no_hang(20), pytest.raises(DataError, match="pipe.png: a FIFO, not a regular file"):
        folder.read_image(str(tmp_path / "pipe.png"))
    with pytest.raises(DataError, match="cannot read image .*null: a character device"):
        folder.read_image("/dev/null")


def test_cache_serves_the_second_load_and_follows_changes(tmp_path, monkeypatch):
    root = tmp_path / "pics"
    write_image_folder(str(root), per_class=3)
    data_dir = tmp_path / "d"
    first = load_dataset(str(root), data_dir=str(data_dir), val_size=0)
    caches = os.listdir(data_dir / ".tinyalex-cache")
    assert len(caches) == 1 and caches[0].startswith("imagefolder-pics-")

    decoded = []
    real_read = folder.read_image
    monkeypatch.setattr(folder, "read_image", lambda p: decoded.append(p) or real_read(p))
    second = load_dataset(str(root), data_dir=str(data_dir), val_size=0)
    assert decoded == []                                # nothing decoded: served from cache
    np.testing.assert_array_equal(second.train_x, first.train_x)

    # touching one file changes the key: decoded again, the stale cache is removed
    path = root / "train" / "bird" / "0006.png"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(path)
    os.utime(path, ns=(1, 1))
    third = load_dataset(str(root), data_dir=str(data_dir), val_size=0)
    assert len(decoded) == 9 and (third.train_x == [1, 2, 3]).all(axis=(1, 2, 3)).sum() == 1
    assert len(os.listdir(data_dir / ".tinyalex-cache")) == 1

    # a damaged cache is rebuilt, not trusted
    cache = data_dir / ".tinyalex-cache" / os.listdir(data_dir / ".tinyalex-cache")[0]
    (cache / "train_x.npy").write_bytes(b"\x93NUMPY broken")
    fourth = load_dataset(str(root), data_dir=str(data_dir), val_size=0)
    np.testing.assert_array_equal(fourth.train_x, third.train_x)
    assert len(decoded) == 18
    # ... and replaced: the next load is served from the new cache
    fifth = load_dataset(str(root), data_dir=str(data_dir), val_size=0)
    np.testing.assert_array_equal(fifth.train_x, third.train_x)
    assert len(decoded) == 18


def test_unwritable_cache_only_warns(tmp_path, capsys):
    root = tmp_path / "pics"
    write_image_folder(str(root), per_class=1)
    (tmp_path / "d").write_text("a file above where the data directory should be")
    ds = load_dataset(str(root), data_dir=str(tmp_path / "d" / "data"), val_size=0)
    assert len(ds.train_y) == 3
    assert "cannot write the image cache" in capsys.readouterr().err


# --- split and statistics -------------------------------------------------------------

def test_split_is_deterministic_balanced_and_disjoint():
    labels = np.repeat(np.arange(10), 50)
    np.random.default_rng(0).shuffle(labels)
    train, val = split_indices(labels, 100, seed=3)
    assert len(val) == 100 and np.bincount(labels[val]).tolist() == [10] * 10
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(500))
    again_train, again_val = split_indices(labels, 100, seed=3)
    np.testing.assert_array_equal(again_val, val)
    _, other = split_indices(labels, 100, seed=4)
    assert not np.array_equal(other, val)


def test_split_of_unbalanced_classes_is_proportional():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    _, val = split_indices(labels, 17, seed=0)
    assert len(val) == 17 and np.bincount(labels[val]).tolist() == [10, 5, 2]


def test_val_size_zero_and_too_large(tmp_path, batches):
    root, _ = batches
    ds = load_dataset(str(root), data_dir=str(tmp_path / "d"), val_size=0)
    assert ds.val_x.shape == (0, 32, 32, 3) and ds.val_y.shape == (0,)
    with pytest.raises(DataError, match="--val-size 15 is too large for 20 training images"):
        load_dataset(str(root), data_dir=str(tmp_path / "d"), val_size=15)
    with pytest.raises(DataError, match="non-negative"):
        load_dataset(str(root), data_dir=str(tmp_path / "d"), val_size=-1)


def test_statistics_come_from_the_training_split(batches, tmp_path):
    root, arrays = batches
    ds = load_dataset(str(root), data_dir=str(tmp_path / "d"), val_size=5, seed=1)
    pixels = ds.train_x.reshape(-1, 3).astype(np.float64) / 255
    np.testing.assert_allclose(ds.mean, pixels.mean(0), rtol=1e-6)
    np.testing.assert_allclose(ds.std, pixels.std(0), rtol=1e-5)
    cov = np.cov(pixels.T, bias=True)
    assert ds.pca_eigval[0] >= ds.pca_eigval[1] >= ds.pca_eigval[2] > 0
    np.testing.assert_allclose(cov @ ds.pca_eigvec, ds.pca_eigvec * ds.pca_eigval, atol=1e-6)
    np.testing.assert_allclose(ds.pca_eigvec.T @ ds.pca_eigvec, np.eye(3), atol=1e-6)
    assert all(a.dtype == np.float32 for a in (ds.mean, ds.std, ds.pca_eigval, ds.pca_eigvec))
    # not the statistics of all 20 images
    every = arrays["train_x"].reshape(-1, 3) / 255
    assert not np.allclose(ds.mean, every.mean(0), rtol=1e-7, atol=0)


def test_constant_channel_does_not_divide_by_zero():
    images = np.zeros((4, 2, 2, 3), np.uint8)
    images[..., 0] = np.arange(4)[:, None, None] * 50
    mean, std, eigval, _ = channel_statistics(images)
    assert std[1] == std[2] == 1.0 and std[0] > 0 and eigval[2] == 0


def test_add_data_arguments():
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    args = parser.parse_args([])
    assert (args.data, args.data_dir, args.val_size, args.augment, args.skip_bad_images) == (
        None, None, None, "flip", False)            # val_size None: load_dataset's default
    args = parser.parse_args(["--data", "x", "--data-dir", "y", "--val-size", "0",
                              "--augment", "paper", "--skip-bad-images"])
    assert (args.data, args.data_dir, args.val_size, args.augment, args.skip_bad_images) == (
        "x", "y", 0, "paper", True)
    for bad in (["--val-size", "-1"], ["--val-size", "ten"], ["--augment", "fancy"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_data_dir_defaults_to_the_environment(tmp_path, monkeypatch, batches):
    root, _ = batches
    write_image_folder(str(tmp_path / "pics"), per_class=1)
    monkeypatch.setenv("TINYALEX_DATA_DIR", str(tmp_path / "envdir"))
    load_dataset(str(tmp_path / "pics"), val_size=0)
    assert os.listdir(tmp_path / "envdir" / ".tinyalex-cache")
