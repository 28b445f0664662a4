"""``load_dataset``: any supported source -> a :class:`Dataset` with splits and statistics.

Sources (``data=``):

    None                      the official archive in ``data_dir`` (downloaded on first use)
    DIR/cifar-10-batches-py   an extracted official archive (or a directory holding one)
    FILE.tar.gz / .tgz / .tar an archive: unpacked once into ``data_dir/<name>/``, then read
                              as a directory (the official archive or an image folder)
    DIR                       an image folder, see :mod:`tinyalex.data.folder`

``data_dir`` defaults to ``$TINYALEX_DATA_DIR``, else ``./data``. It holds the download,
the unpacked archives and the image-folder cache (``data_dir/.tinyalex-cache/``).

Splits: the validation split is carved out of the training images, ``val_size`` of them
(default: a tenth, at most 5000, so CIFAR-10's 50,000 give the usual 45,000/5,000 and a small
folder still has training images left), class-balanced (stratified: each class gives its
share, rounded so the total is exact) and chosen by a generator seeded with ``seed``, so
the same arguments always give the same split. The test split, when the source has one, is
left alone for the final evaluation.

Statistics, all from the training split only and in 0..1 pixel units (``v / 255``):
``mean`` and ``std`` per channel, and the eigen-decomposition of the 3x3 RGB covariance
for the paper's PCA lighting: ``cov @ pca_eigvec[:, i] = pca_eigval[i] * pca_eigvec[:, i]``,
eigenvalues in decreasing order.
"""
import os
import shutil
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from tinyalex.errors import DataError
from tinyalex.outfiles import new_folders_removed_on_failure

from . import cifar
from .download import safe_extract
from .folder import load_image_folder
from .pixels import channel_moments

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")
CACHE_DIRNAME = ".tinyalex-cache"
DEFAULT_VAL_SIZE = 5000


@dataclass
class Dataset:
    """Images are uint8 (N, 32, 32, 3), labels int64 (N,)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: Optional[np.ndarray]
    test_y: Optional[np.ndarray]
    classes: List[str]
    mean: np.ndarray          # (3,) float32, per channel, 0..1 units
    std: np.ndarray           # (3,) float32
    pca_eigval: np.ndarray    # (3,) float32, decreasing
    pca_eigvec: np.ndarray    # (3, 3) float32, eigenvectors in the columns
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> str:
        test = f", {len(self.test_y)} test" if self.test_y is not None else ", no test split"
        return (f"{self.source}: {len(self.train_y)} train, {len(self.val_y)} val{test}; "
                f"{self.num_classes} classes")


def default_data_dir() -> str:
    return os.environ.get("TINYALEX_DATA_DIR") or "data"


def default_val_size(n_train: int) -> int:
    """--val-size's default for ``n_train`` training images: a tenth of them, at most 5000."""
    return min(DEFAULT_VAL_SIZE, n_train // 10)


def load_dataset(data=None, *, data_dir=None, val_size=None, seed=0, skip_bad_images=False,
                 download=True) -> Dataset:
    """Load a source (see the module docstring), split off validation (``val_size`` images,
    None: default_val_size), compute statistics."""
    data_dir = os.path.expanduser(data_dir or default_data_dir())
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise DataError(f"--data-dir {data_dir} is a file, not a directory; choose another "
                        f"--data-dir")
    if val_size is not None and (isinstance(val_size, bool) or
                                 not isinstance(val_size, (int, np.integer)) or val_size < 0):
        raise DataError(f"--val-size must be a non-negative integer, got {val_size!r}")
    with new_folders_removed_on_failure(data_dir):   # a failed first run leaves no empty data/
        if data is None:
            try:
                root = cifar.official_batches_dir(data_dir, download_ok=download)
            except OSError as e:
                raise DataError(f"cannot download CIFAR-10 into {_unwritable(data_dir, e)}") from None
            parts, source = cifar.read_batches_dir(root), f"CIFAR-10 ({root})"
        else:
            parts, source = _load_path(os.path.expanduser(str(data)), data_dir, skip_bad_images)
    train_x, train_y, test_x, test_y, classes = parts
    if val_size is None:
        val_size = default_val_size(len(train_y))
    train_idx, val_idx = split_indices(train_y, val_size, seed=seed)
    ds_train_x, ds_train_y = train_x[train_idx], train_y[train_idx]
    mean, std, eigval, eigvec = channel_statistics(ds_train_x)
    return Dataset(train_x=ds_train_x, train_y=ds_train_y,
                   val_x=train_x[val_idx], val_y=train_y[val_idx],
                   test_x=test_x, test_y=test_y, classes=list(classes),
                   mean=mean, std=std, pca_eigval=eigval, pca_eigvec=eigvec, source=source)


def _load_path(path: str, data_dir: str, skip_bad_images: bool):
    if not os.path.exists(path):
        raise DataError(f"--data {path}: no such file or directory")
    if os.path.isfile(path):
        if not path.lower().endswith(ARCHIVE_SUFFIXES):
            raise DataError(f"--data {path}: expected a directory or a .tar.gz archive")
        try:
            path = _unpack(path, data_dir)
        except OSError as e:
            raise DataError(f"cannot unpack {path} into {_unwritable(data_dir, e)}") from None
    if cifar.is_batches_dir(path):
        return cifar.read_batches_dir(path), f"CIFAR-10 batches ({path})"
    inner = os.path.join(path, cifar.BATCHES_DIR)
    if os.path.isdir(inner):
        return cifar.read_batches_dir(inner), f"CIFAR-10 batches ({inner})"
    cache_dir = os.path.join(data_dir, CACHE_DIRNAME)
    return (load_image_folder(path, cache_dir=cache_dir, skip_bad_images=skip_bad_images),
            f"image folder ({os.path.abspath(path)})")


def _unwritable(data_dir: str, error: OSError) -> str:
    """The end of the message for a --data-dir that cannot be written: a file, read-only."""
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        why = "it is a file, not a directory"
    else:
        why = error.strerror or str(error)
    return f"--data-dir {data_dir}: {why}; pass a writable directory as --data-dir"


def _unpack(archive: str, data_dir: str) -> str:
    """Unpack ``archive`` into ``data_dir/<name>/`` unless that was already done for this file.

    A marker written last records the archive's size and mtime: a crash mid-way or a changed
    archive means the next run unpacks it again.
    """
    name = os.path.basename(archive)
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[:-len(suffix)]
            break
    dest = os.path.join(data_dir, name)
    marker = os.path.join(dest, ".unpacked-from")
    st = os.stat(archive)
    stamp = f"{os.path.abspath(archive)}\t{st.st_size}\t{st.st_mtime_ns}\n"
    if os.path.isfile(marker):
        with open(marker) as f:
            if f.read() == stamp:
                return dest
    if os.path.isdir(dest) and not os.path.isfile(marker):
        # something else lives here: do not replace the user's files
        raise DataError(f"cannot unpack {archive}: {dest} already exists and was not made by "
                        f"tinyalex; move it away or pass --data-dir elsewhere")
    staging = dest + ".unpacking"
    if os.path.isdir(staging):          # left over from a crash
        shutil.rmtree(staging)
    try:
        safe_extract(archive, staging)
        with open(os.path.join(staging, ".unpacked-from"), "w") as f:
            f.write(stamp)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if os.path.isdir(dest):             # unpacked from an older version of the archive
        shutil.rmtree(dest)
    os.replace(staging, dest)
    return dest


# --------------------------------------------------------------------------------------

def split_indices(labels: np.ndarray, val_size: int, *, seed: int = 0):
    """Class-balanced, seeded split of ``range(len(labels))`` into (train, val) index arrays.

    Each class gives ``val_size * n_c / N`` images, rounded by largest remainder so the
    shares add up to ``val_size``; which images is a seeded permutation within the class.
    Both index arrays come back sorted, so the images keep their original order.
    """
    n = len(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if val_size > n - len(classes):
        raise DataError(f"--val-size {val_size} is too large for {n} training images in "
                        f"{len(classes)} classes (at most {n - len(classes)})")
    exact = val_size * counts / n
    shares = np.floor(exact).astype(np.int64)
    leftover = val_size - shares.sum()
    shares[np.argsort(-(exact - shares), kind="stable")[:leftover]] += 1
    shares = np.minimum(shares, counts - 1)          # every class keeps a training image
    while shares.sum() < val_size:                    # (only bites on tiny, skewed sets)
        shares[np.argmax(counts - 1 - shares)] += 1
    rng = np.random.default_rng([seed, 0x5A1])       # its own stream, apart from the loader's
    val = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, shares)]
    val = np.sort(np.concatenate(val)) if val else np.empty(0, np.int64)
    train = np.setdiff1d(np.arange(n), val, assume_unique=True)
    return train, val.astype(np.int64)


def channel_statistics(images: np.ndarray):
    """Per-channel mean and std and the RGB covariance eigen-pairs, in 0..1 units.

    Sums are exact integers (Numba kernel), so the result does not depend on the order
    of the images; std is the population std (divide by the number of pixels).
    """
    if len(images) == 0:
        raise DataError("no training images left to compute the normalisation from")
    pixels = np.ascontiguousarray(images).reshape(-1, 3)   # (N*H*W, 3)
    s, ss = channel_moments(pixels)
    m = len(pixels)
    mean = s / (255.0 * m)
    cov = ss / (255.0 ** 2 * m) - np.outer(mean, mean)     # E[v v^T] - mean mean^T
    std = np.sqrt(np.maximum(np.diag(cov), 0.0))
    std = np.where(std > 0, std, 1.0)                       # a constant channel: do not divide by 0
    eigval, eigvec = np.linalg.eigh(cov)                    # increasing order
    eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
    return (mean.astype(np.float32), std.astype(np.float32),
            np.maximum(eigval, 0.0).astype(np.float32), np.ascontiguousarray(eigvec, np.float32))


LIMIT_STREAMS = {"train": 3, "val": 4, "test": 5}   # of the run's seed (the loader uses 0 and 1, dropout 2)


def subset(images, labels, limit, seed, split):
    """`limit` images drawn at random (seeded) from a split, kept in their original order; all
    of them when limit is None. A random draw, not the first `limit`: image folders list their
    images class by class, so the first few thousand would hold one or two classes only."""
    if limit is None or limit >= len(labels):
        return images, labels
    pick = np.random.default_rng([seed, LIMIT_STREAMS[split]]).permutation(len(labels))[:limit]
    pick.sort()
    return images[pick], labels[pick]
