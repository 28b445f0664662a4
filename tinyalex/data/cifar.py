"""The official CIFAR-10 "python version": download, unpack and read the pickle batches.

The archive ``cifar-10-python.tar.gz`` holds one directory, ``cifar-10-batches-py/``, with

    data_batch_1 ... data_batch_5   10,000 training images each
    test_batch                      10,000 test images
    batches.meta                    {b"label_names": [b"airplane", ..., b"truck"], ...}

Each batch is a pickled dict written by Python 2: ``b"data"`` is a (10000, 3072) uint8
array, one image per row, stored channel-major (1024 red values, then green, then blue,
each 32x32 row by row), and ``b"labels"`` a list of ints in 0..9. Python 3 reads it with
``pickle.load(f, encoding="bytes")``; the keys then come back as bytes.

A pickle can run arbitrary code when loaded, so :func:`read_pickle` only lets through the
few globals a pickled NumPy array needs (see ``_ALLOWED``).
"""
import codecs
import os
import pickle

import numpy as np

from tinyalex.errors import DataError

from .download import download, md5_of, safe_extract

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
BATCHES_DIR = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
META_FILE = "batches.meta"

try:
    from numpy._core import multiarray as _multiarray   # NumPy 2
except ImportError:  # pragma: no cover - NumPy 1
    from numpy.core import multiarray as _multiarray

# (module, name) -> object: all a pickled ndarray or NumPy scalar refers to, under the
# NumPy 1 and NumPy 2 module names (the official files were written as numpy.core).
_ALLOWED = {
    **{(module, name): getattr(_multiarray, name)
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")
       for name in ("_reconstruct", "scalar")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,   # how Python 3 pickles bytes at protocol 2
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}") from None


def read_pickle(path: str) -> dict:
    """Load one CIFAR batch file; any damage becomes a DataError."""
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"missing CIFAR-10 batch file {path}") from None
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ...: all mean damage
        raise DataError(f"{path} is truncated or corrupt ({type(e).__name__}: {e}); "
                        f"delete the directory and extract the archive again") from None


def read_batch(path: str, num_classes: int):
    """Images (N, 32, 32, 3) uint8 and labels (N,) int64 of one batch file, checked."""
    d = read_pickle(path)
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DataError(f"{path} is not a CIFAR-10 batch (no b'data' and b'labels' entries)")
    data = np.asarray(d[b"data"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise DataError(f"{path}: b'data' has shape {data.shape} and dtype {data.dtype}, "
                        f"expected (N, 3072) uint8")
    try:
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: b'labels' is not a list of integers") from None
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {labels.shape[0] if labels.ndim == 1 else labels.shape} "
                        f"labels for {data.shape[0]} images")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise DataError(f"{path}: label {labels[bad][0]} out of range 0..{num_classes - 1}")
    # rows are channel-major (3, 32, 32); the pipeline works on (32, 32, 3)
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def read_batches_dir(root: str):
    """Read an extracted ``cifar-10-batches-py`` directory.

    Returns (train_x, train_y, test_x, test_y, classes); test_x/test_y are None when there is
    no ``test_batch`` (the training batches and ``batches.meta`` are required).
    """
    missing = [n for n in [META_FILE] + TRAIN_FILES if not os.path.isfile(os.path.join(root, n))]
    if missing:
        raise DataError(f"{root} is missing CIFAR-10 batch files: {', '.join(missing)}; "
                        f"delete it and extract the archive again")
    meta = read_pickle(os.path.join(root, META_FILE))
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not names:
        raise DataError(f"{os.path.join(root, META_FILE)} has no b'label_names'")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    twice = sorted({c for c in classes if classes.count(c) > 1})
    if twice:   # classes are matched by name (evaluate, resume): a name must mean one class
        raise DataError(f"{os.path.join(root, META_FILE)} lists class name(s) "
                        f"{', '.join(map(repr, twice))} more than once; give every class its own name")
    parts = [read_batch(os.path.join(root, n), len(classes)) for n in TRAIN_FILES]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x = test_y = None
    if os.path.isfile(os.path.join(root, TEST_FILE)):
        test_x, test_y = read_batch(os.path.join(root, TEST_FILE), len(classes))
    return train_x, train_y, test_x, test_y, classes


def is_batches_dir(path: str) -> bool:
    """True for a directory that looks like ``cifar-10-batches-py`` (has any batch file)."""
    return any(os.path.exists(os.path.join(path, n)) for n in [META_FILE, TRAIN_FILES[0]])


def official_batches_dir(data_dir: str, *, download_ok: bool = True, url: str = None,
                         md5: str = None) -> str:
    """Path of ``data_dir/cifar-10-batches-py``, downloading and extracting it if needed.

    Order: use the extracted directory if present; else extract ``data_dir/<archive>`` if
    present (after checking its md5, since it may have been put there by hand); else
    download the archive (when ``download_ok``) and extract it.
    """
    url = url or CIFAR10_URL
    md5 = md5 or CIFAR10_MD5
    batches = os.path.join(data_dir, BATCHES_DIR)
    if os.path.isdir(batches):
        return batches
    archive = os.path.join(data_dir, ARCHIVE_NAME)
    if os.path.isfile(archive):
        got = md5_of(archive)
        if got != md5:
            raise DataError(f"{archive} has md5 {got}, expected {md5} (truncated or not the "
                            f"official archive); delete it and tinyalex will download it again")
    elif not download_ok:
        raise DataError(f"CIFAR-10 not found in {data_dir}; download {url} and put it at "
                        f"{archive}, or pass --data PATH")
    else:
        download(url, archive, md5)
    names = safe_extract(archive, data_dir)
    if BATCHES_DIR not in names:
        raise DataError(f"{archive} does not contain a {BATCHES_DIR} directory "
                        f"(found: {', '.join(names[:5])})")
    return batches
