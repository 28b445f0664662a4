"""Small synthetic datasets in every format tinyalex reads, for tests and benchmarks.

The images are learnable: each class has its own random 32x32 colour template and every
image is its template plus noise, so a model trained for a few steps does better than
chance. Nothing here touches the network or the real CIFAR-10.

    make_images(n, num_classes, seed)             -> images (n, 32, 32, 3) uint8, labels (n,)
    write_cifar_batches(root, ...)                -> a cifar-10-batches-py directory
    write_cifar_archive(path, ...)                -> cifar-10-python.tar.gz; returns its md5
    write_image_folder(root, ...)                 -> root/[split/]<class>/NNNN.<ext>
"""
import hashlib
import os
import pickle
import tarfile
import tempfile

import numpy as np
from PIL import Image

from .cifar import BATCHES_DIR, META_FILE, TEST_FILE, TRAIN_FILES

CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck"]


def make_images(n: int, num_classes: int = 10, *, seed: int = 0, size: int = 32):
    """``n`` images (class template + noise) with balanced labels 0..num_classes-1, shuffled."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(40, 216, size=(num_classes, size, size, 3))
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    noise = rng.integers(-40, 41, size=(n, size, size, 3))
    images = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels


def _dump_like_python2(obj, path: str) -> None:
    """Pickle at protocol 2 under NumPy 1 module names, as the official batches are."""
    data = pickle.dumps(obj, protocol=2).replace(b"numpy._core.multiarray",
                                                 b"numpy.core.multiarray")
    with open(path, "wb") as f:
        f.write(data)


def write_cifar_batches(root: str, *, per_batch: int = 20, n_test: int = 20,
                        classes=None, seed: int = 0) -> dict:
    """Write an official-format ``cifar-10-batches-py`` directory at ``root``.

    Five training batches of ``per_batch`` images, a test batch of ``n_test`` (none if 0),
    and ``batches.meta``. Returns the arrays written (NHWC), to compare against.
    """
    classes = list(classes or CLASSES)
    os.makedirs(root, exist_ok=True)
    train_x, train_y = make_images(5 * per_batch, len(classes), seed=seed)
    for i, name in enumerate(TRAIN_FILES):
        sl = slice(i * per_batch, (i + 1) * per_batch)
        _dump_like_python2(_batch_dict(train_x[sl], train_y[sl], name), os.path.join(root, name))
    test_x = test_y = None
    if n_test:
        test_x, test_y = make_images(n_test, len(classes), seed=seed + 1)
        _dump_like_python2(_batch_dict(test_x, test_y, TEST_FILE), os.path.join(root, TEST_FILE))
    _dump_like_python2({b"label_names": [c.encode() for c in classes],
                        b"num_cases_per_batch": per_batch, b"num_vis": 3072},
                       os.path.join(root, META_FILE))
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y,
            "classes": classes}


def _batch_dict(images, labels, name):
    return {b"batch_label": name.encode(),
            b"labels": [int(v) for v in labels],
            # rows are channel-major: all red values, then green, then blue
            b"data": np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), -1),
            b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(images))]}


def write_cifar_archive(path: str, **kwargs):
    """Write a ``.tar.gz`` holding ``cifar-10-batches-py/``; returns (md5, arrays written)."""
    with tempfile.TemporaryDirectory() as tmp:
        arrays = write_cifar_batches(os.path.join(tmp, BATCHES_DIR), **kwargs)
        with tarfile.open(path, "w:gz") as tar:
            tar.add(os.path.join(tmp, BATCHES_DIR), arcname=BATCHES_DIR)
    with open(path, "rb") as f:
        md5 = hashlib.md5(f.read()).hexdigest()
    return md5, arrays


def write_image_folder(root: str, *, per_class: int = 4, classes=None, split: str = "train",
                       ext: str = "png", mode: str = "RGB", size: int = 32, seed: int = 0):
    """Write ``root/<split>/<class>/NNNN.<ext>`` (``split=None``: ``root/<class>/...``).

    ``mode`` is any Pillow mode the format can store (``L``, ``RGBA``, ``P``, ``I;16``...);
    ``size`` other than 32 makes images the loader must resize. Returns the RGB uint8
    images (before any lossy encoding or mode conversion) and labels, in file order.
    """
    classes = list(classes or CLASSES[:3])
    images, labels = make_images(per_class * len(classes), len(classes), seed=seed, size=size)
    order = np.argsort(labels, kind="stable")
    images, labels = images[order], labels[order]
    base = os.path.join(root, split) if split else root
    for k, (image, label) in enumerate(zip(images, labels)):
        folder = os.path.join(base, classes[label])
        os.makedirs(folder, exist_ok=True)
        to_image(image, mode).save(os.path.join(folder, f"{k:04d}.{ext}"))
    return images, labels


def to_image(rgb: np.ndarray, mode: str) -> Image.Image:
    """An RGB uint8 array as a Pillow image of ``mode`` (16-bit modes scale 0..255 to 0..65535)."""
    image = Image.fromarray(rgb, "RGB")
    if mode == "I;16":
        grey = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        return Image.fromarray(grey)          # uint16 -> mode I;16
    if mode == "P":
        return image.quantize(256)
    return image.convert(mode)
