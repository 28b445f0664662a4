"""Image folders: ``ROOT/train/<class>/*`` (+ optional ``ROOT/test/<class>/*``) or ``ROOT/<class>/*``.

Class index = position of the folder name in sorted order (for CIFAR-10's folder names
this is the official label order, airplane=0 ... truck=9). Any file Pillow can read
(JPEG, PNG, BMP, GIF, TIFF, WebP, ...; chosen by extension, searched recursively inside a
class folder, hidden files ignored) becomes RGB uint8:

    L, 1, P, CMYK, YCbCr ...    Pillow's conversion to RGB
    RGBA, LA, P + transparency  alpha dropped (colour kept as stored)
    I;16, I (16-bit)            divided by 257: 0..65535 -> 0..255
    F (float)                   0..1 -> 0..255 if its maximum is <= 1, else clipped

and, if it is not already 32x32, is resized to 32x32 (bicubic with Pillow's antialiasing;
the aspect ratio is not kept, as with ``torchvision.transforms.Resize((32, 32))``). EXIF
orientation is applied first, so phone photos come out upright.

Decoding 50,000 files takes a while, so the decoded arrays are cached in
``<cache_dir>/imagefolder-<name>-<where>-<key>/`` (one ``.npy`` file per array), where
``where`` hashes the folder's absolute path and ``key`` the list of files with their sizes
and modification times: adding, removing or touching a file makes a new cache (the stale
one is deleted). The cache is written under a temporary name and renamed, so a crash
never leaves a half-written cache; a damaged cache is rebuilt.
"""
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from tinyalex.errors import DataError

CACHE_VERSION = 1    # bump when decoding changes, so old caches are not reused
IMAGE_SIZE = 32      # every image is stored at 32x32, like CIFAR-10
SHOW_BAD = 3         # how many unreadable files an error message names


def image_extensions() -> frozenset:
    """Lower-case file extensions Pillow can open (``.jpg``, ``.png``, ...)."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN)


# --------------------------------------------------------------------------------------
# One image file -> (32, 32, 3) uint8
# --------------------------------------------------------------------------------------

def read_image(path: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """Decode any Pillow-readable file to an RGB uint8 array (size, size, 3); DataError if unreadable."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))   # JPEG: decode big photos at 1/2..1/8 scale
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
        array = np.asarray(rgb, dtype=np.uint8)
    except Exception as e:   # Pillow raises OSError, ValueError, SyntaxError, ... on bad files
        raise DataError(f"cannot read image {path}: {_short(e)}") from None
    return array


def _to_rgb(image: Image.Image) -> Image.Image:
    """Pillow image of any mode -> RGB (see the module docstring for the rules)."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if mode == "F":
            values = values * 255.0 if values.max(initial=0.0) <= 1.0 else values
        elif mode.startswith("I;16") or values.max(initial=0.0) > 255:
            values = values / 257.0                       # 16-bit range to 8-bit
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")   # avoids Pillow's warning about palette transparency
    return image.convert("RGB")


def _short(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."


# --------------------------------------------------------------------------------------
# Folder layout
# --------------------------------------------------------------------------------------

def _visible_dirs(path: str) -> list:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _image_files(class_dir: str, root: str, extensions) -> list:
    """[(path relative to root, size, mtime_ns)] of the images under ``class_dir``, sorted."""
    found = []
    prefix = len(root) + 1
    stack = [class_dir]
    while stack:                       # depth-first, in sorted order
        entries = sorted(os.scandir(stack.pop()), key=lambda e: e.name)
        subdirs = []
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir():
                subdirs.append(e.path)
            elif e.name[e.name.rfind("."):].lower() in extensions:
                st = e.stat()
                found.append((e.path[prefix:], st.st_size, st.st_mtime_ns))
        stack += reversed(subdirs)
    return found


def scan(root: str):
    """Find the splits, classes and files of an image folder.

    Returns (classes, {"train": [(relpath, label, size, mtime_ns), ...], "test": [...]})
    with "test" present only for the ``ROOT/train`` + ``ROOT/test`` layout.
    """
    if os.path.isdir(os.path.join(root, "train")):
        split_dirs = {"train": os.path.join(root, "train")}
        if os.path.isdir(os.path.join(root, "test")):
            split_dirs["test"] = os.path.join(root, "test")
    elif os.path.isdir(os.path.join(root, "test")):
        raise DataError(f"{root} has a test/ folder but no train/ folder; put the training "
                        f"images in {os.path.join(root, 'train', '<class>')}/")
    else:
        split_dirs = {"train": root}
    extensions = image_extensions()
    classes = _visible_dirs(split_dirs["train"])
    if not classes:
        raise DataError(f"no class folders in {split_dirs['train']}: expected "
                        f"{os.path.join(split_dirs['train'], '<class>', '<image files>')}")
    if "test" in split_dirs:
        test_classes = _visible_dirs(split_dirs["test"])
        if test_classes != classes:
            only_train = sorted(set(classes) - set(test_classes))
            only_test = sorted(set(test_classes) - set(classes))
            raise DataError(f"the train and test folders of {root} have different classes "
                            f"(only in train: {', '.join(only_train) or '-'}; only in test: "
                            f"{', '.join(only_test) or '-'}); give both the same class folders")
    splits = {}
    for split, split_dir in split_dirs.items():
        entries = []
        for label, name in enumerate(classes):
            files = _image_files(os.path.join(split_dir, name), root, extensions)
            if split == "train" and not files:
                raise DataError(f"class folder {os.path.join(split_dir, name)} has no images "
                                f"(looked for {', '.join(sorted(extensions)[:6])}, ...)")
            entries += [(rel, label, size, mtime) for rel, size, mtime in files]
        splits[split] = entries
    return classes, splits


# --------------------------------------------------------------------------------------
# Loading with a cache
# --------------------------------------------------------------------------------------

def load_image_folder(root: str, *, cache_dir: str = None, skip_bad_images: bool = False):
    """Decode an image folder (or read its cache).

    Returns (train_x, train_y, test_x, test_y, classes); test_x/test_y are None without a
    test/ folder. Unreadable files raise a DataError naming the first few, or are skipped
    with a warning on stderr when ``skip_bad_images``.
    """
    root = os.path.abspath(root)
    classes, splits = scan(root)
    key = hashlib.sha256(json.dumps([CACHE_VERSION, IMAGE_SIZE, classes, splits]).encode())
    cache = _cache_path(cache_dir, root, key.hexdigest()) if cache_dir else None
    arrays = _read_cache(cache) if cache else None
    if arrays is None:
        arrays = _decode(root, classes, splits)
        if cache:
            _write_cache(cache, arrays)
    bad = list(arrays["bad"])
    if bad:
        names = ", ".join(bad[:SHOW_BAD]) + (f" and {len(bad) - SHOW_BAD} more"
                                             if len(bad) > SHOW_BAD else "")
        if not skip_bad_images:
            raise DataError(f"{len(bad)} unreadable image file(s) in {root}: {names} "
                            f"({arrays['first_error'].item()}); fix or delete them, or pass "
                            f"--skip-bad-images to skip them")
        print(f"tinyalex: warning: skipped {len(bad)} unreadable image file(s) in {root}: "
              f"{names}", file=sys.stderr)
        if len(arrays["train_y"]) == 0 or len(np.unique(arrays["train_y"])) < len(classes):
            missing = sorted(set(range(len(classes))) - set(arrays["train_y"].tolist()))
            raise DataError(f"after skipping unreadable files, class "
                            f"{classes[missing[0]]!r} of {root} has no training images left")
    test_x = arrays["test_x"] if arrays["has_test"] else None
    test_y = arrays["test_y"] if arrays["has_test"] else None
    return arrays["train_x"], arrays["train_y"], test_x, test_y, classes


def _decode(root: str, classes, splits) -> dict:
    total = sum(len(v) for v in splits.values())
    if total == 0:
        raise DataError(f"no images found in {root}")
    arrays = {"has_test": np.array("test" in splits), "classes": np.array(classes)}
    bad, first_error = [], ""
    with tqdm(total=total, desc=f"decoding {os.path.basename(root)}", unit="img",
              leave=False, disable=None) as bar:
        for split in ("train", "test"):
            entries = splits.get(split, [])
            images = np.empty((len(entries), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
            labels = np.empty(len(entries), np.int64)
            kept = 0
            for rel, label, _, _ in entries:
                bar.update(1)
                try:
                    images[kept] = read_image(os.path.join(root, rel))
                except DataError as e:
                    bad.append(rel)
                    first_error = first_error or str(e).split(": ", 1)[-1]
                    continue
                labels[kept] = label
                kept += 1
            arrays[f"{split}_x"] = images[:kept]
            arrays[f"{split}_y"] = labels[:kept]
    arrays["bad"] = np.array(bad, dtype=str)
    arrays["first_error"] = np.array(first_error)
    return arrays


# the arrays a cache directory holds, one NAME.npy each
_CACHED = ("train_x", "train_y", "test_x", "test_y", "has_test", "classes", "bad",
           "first_error")


def _cache_path(cache_dir: str, root: str, key: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(root)) or "root"
    where = hashlib.sha256(root.encode()).hexdigest()[:8]   # two folders of the same name
    return os.path.join(cache_dir, f"imagefolder-{name}-{where}-{key[:16]}")


def _read_cache(path: str):
    """The arrays of a cache directory, or None if it is missing or damaged."""
    if not os.path.isdir(path):
        return None
    try:
        arrays = {}
        for name in _CACHED:
            arrays[name] = np.load(os.path.join(path, name + ".npy"), allow_pickle=False)
        return arrays
    except Exception:   # truncated or damaged: rebuild it
        return None


def _write_cache(path: str, arrays: dict) -> None:
    """Write a directory of .npy files under a temporary name, then rename it into place.

    The rename is atomic, so a reader sees a whole cache or none. Caches of older
    contents of the same folder are deleted.
    """
    directory = os.path.dirname(path)
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=directory)
        for name in _CACHED:
            np.save(os.path.join(tmp, name + ".npy"), arrays[name], allow_pickle=False)
        try:
            os.rename(tmp, path)
            tmp = None
        except OSError:
            if not os.path.isdir(path):   # else another process just wrote the same cache
                raise
        stem = os.path.basename(path).rsplit("-", 1)[0] + "-"
        for name in os.listdir(directory):
            if name.startswith(stem) and name != os.path.basename(path):
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    except OSError as e:   # a read-only or full disk only costs the next run time
        print(f"tinyalex: warning: cannot write the image cache {path}: {e}", file=sys.stderr)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
