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
never leaves a half-written cache; a damaged cache is deleted and rebuilt.

Only regular files are read. A file with an image extension that is something else (a
FIFO, a device, a link to nothing or a link loop) counts as an unreadable image, without
being opened: opening a FIFO would wait forever for a writer. Links to folders are
followed, except those leading back to a folder already on the walk (``ln -s .. up``,
``ln -s . self``), which would list the same images again and again; those are skipped
with a warning.
"""
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from tinyalex.errors import DataError, printable

CACHE_VERSION = 1    # bump when decoding changes, so old caches are not reused
IMAGE_SIZE = 32      # every image is stored at 32x32, like CIFAR-10
SHOW_BAD = 3         # how many unreadable files an error message names
MAX_PIXELS = 50_000_000   # a larger image is refused before it is decoded


def image_extensions() -> frozenset:
    """Lower-case file extensions Pillow can open (``.jpg``, ``.png``, ...)."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN)


# --------------------------------------------------------------------------------------
# One image file -> (32, 32, 3) uint8
# --------------------------------------------------------------------------------------

def read_image(path: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """Decode any Pillow-readable file to an RGB uint8 array (size, size, 3); DataError if unreadable.

    Refused without decoding: an empty file, and an image of more than MAX_PIXELS pixels
    (at the scale it would be decoded at), which would take gigabytes for a 32x32 result.
    """
    try:
        with _open_regular(path) as f, _open_image(f) as image:
            image.draft("RGB", (size, size))   # JPEG: decode big photos at 1/2..1/8 scale
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ValueError(f"it is {width}x{height} pixels, more than the "
                                 f"{MAX_PIXELS // 10**6} megapixels tinyalex decodes; shrink it")
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
        array = np.asarray(rgb, dtype=np.uint8)
    except Exception as e:   # Pillow raises OSError, ValueError, SyntaxError, ... on bad files
        raise DataError(f"cannot read image {path}: {_short(e)}") from None
    return array


def _open_regular(path: str):
    """``path`` opened for binary reading; OSError unless it is a regular file.

    The file is opened without blocking and checked before anything is read: a plain
    ``open`` of a FIFO waits until another process opens it for writing.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"{_kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _open_image(f) -> Image.Image:
    """``Image.open`` of an open regular file, with its problems in words: an empty file, not an
    image, an image too large to open (Pillow's decompression-bomb limit, checked without its
    warning; read_image's own limit is lower)."""
    if os.fstat(f.fileno()).st_size == 0:
        raise ValueError("the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(f)
    except UnidentifiedImageError:
        raise ValueError("not an image file Pillow can read") from None
    except Image.DecompressionBombError:
        raise ValueError(f"it is more than the {MAX_PIXELS // 10**6} megapixels tinyalex "
                         f"decodes; shrink it") from None


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def _to_rgb(image: Image.Image) -> Image.Image:
    """Pillow image of any mode -> RGB (see the module docstring for the rules)."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError("it has NaN or infinite pixel values")
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

def _dir_id(path: str):
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _visible_dirs(path: str, walked: set, skipped: list, root: str) -> list:
    """Sorted names of the visible folders in ``path`` (links to folders included), leaving
    out links back to a folder in ``walked``, which go into ``skipped``."""
    names = []
    for e in os.scandir(path):
        if e.name.startswith(".") or not _is_dir(e):
            continue
        if _dir_id(e.path) in walked:
            skipped.append(os.path.relpath(e.path, root))
            continue
        names.append(e.name)
    return sorted(names)


def _is_dir(entry) -> bool:
    """``entry.is_dir()``, False for a link that cannot be followed (a loop raises OSError)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _image_files(class_dir: str, root: str, extensions, walked: set, unreadable: dict,
                 skipped: list) -> list:
    """[(path relative to root, size, mtime_ns)] of the images under ``class_dir``, sorted.

    An image-named entry that is not a regular file gets size -1 and its reason in
    ``unreadable``. ``walked`` holds the (device, inode) of the folders above and already
    read; a link to one of them is not followed but noted in ``skipped``.
    """
    found = []
    prefix = len(root) + 1
    walked = walked | {_dir_id(class_dir)}
    stack = [class_dir]
    while stack:                       # depth-first, in sorted order
        entries = sorted(os.scandir(stack.pop()), key=lambda e: e.name)
        subdirs = []
        for e in entries:
            if e.name.startswith("."):
                continue
            if _is_dir(e):
                where = _dir_id(e.path)
                if where in walked:
                    skipped.append(e.path[prefix:])
                else:
                    walked.add(where)
                    subdirs.append(e.path)
            elif e.name[e.name.rfind("."):].lower() in extensions:
                try:
                    st = e.stat()            # follows a link to its file
                except OSError as error:
                    dangling = isinstance(error, FileNotFoundError) and e.is_symlink()
                    unreadable[e.path[prefix:]] = ("a link to a missing file" if dangling
                                                  else error.strerror or str(error))
                    found.append((e.path[prefix:], -1, 0))
                    continue
                if not stat.S_ISREG(st.st_mode):
                    unreadable[e.path[prefix:]] = f"{_kind(st.st_mode)}, not a regular file"
                    found.append((e.path[prefix:], -1, 0))
                    continue
                found.append((e.path[prefix:], st.st_size, st.st_mtime_ns))
        stack += reversed(subdirs)
    return found


def scan(root: str):
    """Find the splits, classes and files of an image folder.

    Returns (classes, {"train": [(relpath, label, size, mtime_ns), ...], "test": [...]},
    unreadable, skipped): "test" is present only for the ``ROOT/train`` + ``ROOT/test``
    layout; ``unreadable`` maps the relpath of each image-named entry that is not a regular
    file (size -1 in the lists) to the reason; ``skipped`` lists the links to folders that
    lead back to a folder already on the walk, which are not followed.
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
    unreadable, skipped = {}, []
    above = {_dir_id(root)} | {_dir_id(d) for d in split_dirs.values()}
    classes = _visible_dirs(split_dirs["train"], above, skipped, root)
    if not classes:
        raise DataError(f"no class folders in {split_dirs['train']}: expected "
                        f"{os.path.join(split_dirs['train'], '<class>', '<image files>')}")
    if "test" in split_dirs:
        test_classes = _visible_dirs(split_dirs["test"], above, [], root)
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
            files = _image_files(os.path.join(split_dir, name), root, extensions, above,
                                 unreadable, skipped)
            if split == "train" and not files:
                raise DataError(f"class folder {os.path.join(split_dir, name)} has no images "
                                f"(looked for {', '.join(sorted(extensions)[:6])}, ...)")
            entries += [(rel, label, size, mtime) for rel, size, mtime in files]
        splits[split] = entries
    return classes, splits, unreadable, skipped


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
    classes, splits, unreadable, skipped = scan(root)
    if skipped:
        print(f"tinyalex: warning: not following {len(skipped)} link(s) back to a folder "
              f"already read in {root}: {printable(', '.join(skipped[:SHOW_BAD]))}"
              f"{' ...' if len(skipped) > SHOW_BAD else ''}", file=sys.stderr)
    key = hashlib.sha256(json.dumps([CACHE_VERSION, IMAGE_SIZE, classes, splits]).encode())
    cache = _cache_path(cache_dir, root, key.hexdigest()) if cache_dir else None
    arrays = _read_cache(cache, classes) if cache else None
    if arrays is None:
        arrays = _decode(root, classes, splits, unreadable)
        if cache:
            _write_cache(cache, arrays)
    bad = list(arrays["bad"])
    if bad:
        names = printable(", ".join(bad[:SHOW_BAD])) + (f" and {len(bad) - SHOW_BAD} more"
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


def _decode(root: str, classes, splits, unreadable: dict) -> dict:
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
                if rel in unreadable:          # not a regular file: never opened
                    bad.append(rel)
                    first_error = first_error or unreadable[rel]
                    continue
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


def _read_cache(path: str, classes: list):
    """The arrays of a cache directory, or None if it is missing or damaged (a damaged one is
    deleted, with a warning, so that the caller can write a new one in its place). What is read
    back is checked as the decoder would have made it: the folder's classes, uint8 images of
    32x32x3, one integer label in 0..classes-1 per image."""
    if not os.path.isdir(path):
        return None
    try:
        arrays = {}
        for name in _CACHED:
            arrays[name] = np.load(os.path.join(path, name + ".npy"), allow_pickle=False)
        if arrays["classes"].tolist() != list(classes):
            raise ValueError("its class names are not the folder's")
        if arrays["has_test"].shape != () or arrays["has_test"].dtype != bool:
            raise ValueError(f"has_test is {arrays['has_test']!r:.40}")
        for split in ("train", "test"):
            x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
            if x.dtype != np.uint8 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3) or y.shape != (len(x),):
                raise ValueError(f"{split} arrays of shapes {x.shape} and {y.shape}")
            if y.dtype.kind not in "iu" or (len(y) and not 0 <= y.min() <= y.max() < len(classes)):
                raise ValueError(f"{split} labels outside 0..{len(classes) - 1}")
        return arrays
    except Exception as e:   # truncated or damaged: rebuild it
        print(f"tinyalex: warning: the image cache {path} is damaged ({_short(e)}); "
              f"decoding the folder again", file=sys.stderr)
        shutil.rmtree(path, ignore_errors=True)
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
