"""Checkpoints: one ``.npz`` file that plain NumPy can read, written atomically.

Layout of the file (``np.load(path)`` works, no ``allow_pickle`` needed):

    param/<name>    a model parameter, e.g. ``param/conv1.w`` (F, C, KH, KW)
    optim/<name>    the optimizer's state for that parameter (SGD: its velocity)
    train/<name>    only in a run that averages its weights (--ema): the weights training goes
                    on from; param/ then holds their average, the weights the run scores
    array/<name>    any other array: data mean and std, RNG states as integer arrays, ...
    meta            a 0-d unicode array holding a JSON object: config, metrics rows,
                    schedule state, epoch, step, class names, model name ("model"),
                    "format_version" and "tinyalex_version"

For example::

    z = np.load("runs/x/last.npz")
    w = z["param/conv1.w"]
    meta = json.loads(z["meta"].item())

Checks. ``load_checkpoint`` checks the file (a readable ``.npz`` of this format);
``load_model_checkpoint`` adds the checks every use of a trained model needs, the same for
``evaluate``, ``predict``, ``filters`` and ``train.py --resume``: a known model, its class
names, parameters of the right names, shapes and float dtype, all finite, and the data's
normalisation; with ``training=True`` (resume) also the position, the schedule, the running
sums and the optimizer state. A hand-edited or damaged checkpoint is a CheckpointError with
one line, never a KeyError or TypeError deep inside training. The entries' names and sizes are
checked from the zip's directory first, so that a small file holding gigabytes of zeros is
refused before anything is decompressed.

Versions. A checkpoint written by an older tinyalex stays usable: evaluated, and resumed
exactly as it was trained. ``format_version`` changes only when the layout above changes; an
option or a record added to ``meta`` later keeps the version, and its absence is read as the
behaviour before it existed: a config without a later training option resumes with the value
those runs trained with (``options.OLD_DEFAULTS``), an option stored under its older name is
read under its new one (``options.RENAMED``: "impl" is now "route"), and a checkpoint without the data's
fingerprint resumes without that check (``trainer.Run._check_same_data``). None is dropped
while such checkpoints may exist; a new format version would be the place to drop them.

Atomic writes: the file is written to a temporary file in the same directory, flushed to
disk (fsync), and renamed over the old one with ``os.replace``, which is atomic on POSIX and
Windows. A crash or Ctrl-C mid-write leaves the previous checkpoint as it was and removes
the temporary file.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyalex import __version__
from tinyalex.errors import CheckpointError, DataError
from tinyalex.outfiles import atomic_write

FORMAT_VERSION = 1

_PREFIXES = ("param/", "optim/", "train/", "array/")
# Bounds on an entry's size as the zip's directory states it, checked before anything is
# decompressed (a few MB of zip can hold gigabytes of zeros): meta is a page of JSON, the
# statistics under array/ are a few numbers, and a parameter (or its optimizer state) holds
# at most its shape's values at 16 bytes each (the widest float) after its .npy header.
MAX_META_BYTES = 64 << 20
MAX_ARRAY_BYTES = 1 << 20
NPY_HEADER_BYTES = 64 << 10


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns: arrays by name (without their prefix) and meta."""
    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    trained: dict[str, np.ndarray] = field(default_factory=dict)   # train/: see the layout


def save_checkpoint(path: str | os.PathLike, *, params: dict[str, np.ndarray],
                    optimizer: dict[str, np.ndarray], arrays: dict[str, np.ndarray],
                    meta: dict[str, Any], trained: dict[str, np.ndarray] | None = None) -> None:
    """Write a checkpoint atomically (see the module docstring for the layout).

    Inputs:
    - params: dict name -> parameter array.
    - optimizer: dict name -> optimizer state array (``SGD.state_dict()``), may be empty.
    - arrays: dict name -> any other numeric array.
    - trained: dict name -> the weights training goes on from, when params holds their
      average (a run with --ema); None or empty otherwise.
    - meta: a JSON-serialisable dict (NumPy scalars and arrays are converted to numbers and
      lists); "format_version" and "tinyalex_version" are added. Store the model name under
      "model" so that ``load_checkpoint(..., model_name=...)`` can check it.

    Raises CheckpointError if the file cannot be written (the old file is kept), ValueError
    for an array NumPy could only store by pickling, TypeError for meta that is not JSON.
    """
    entries: dict[str, np.ndarray] = {}
    for prefix, group in (("param/", params), ("optim/", optimizer), ("train/", trained or {}),
                          ("array/", arrays)):
        for name, value in group.items():
            value = np.asarray(value)
            if value.dtype.hasobject:
                raise ValueError(f"checkpoint entry {prefix}{name} has dtype object; "
                                 "only numeric and string arrays can be stored without pickle")
            entries[prefix + name] = value
    meta = dict(meta, format_version=FORMAT_VERSION, tinyalex_version=__version__)
    entries["meta"] = np.array(json.dumps(meta, default=_json_default))   # 0-d unicode array

    try:
        atomic_write(path, lambda f: np.savez(f, **entries))
    except OSError as e:
        raise CheckpointError(f"could not write checkpoint {os.fspath(path)}: "
                              f"{e.strerror or e}") from None


def load_checkpoint(path: str | os.PathLike, *, model_name: str | None = None,
                    shapes: dict[str, tuple] | None = None) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``, checking it as it goes.

    Raises CheckpointError with a one-line message if the file is missing, is not an
    ``.npz`` (zip) file, is truncated or corrupt, lacks ``meta`` or parameters, has a format
    version other than FORMAT_VERSION, or (when ``model_name`` is given) holds another model.
    The entries' names, and the size of meta, are checked from the zip's directory before
    anything is read; with ``shapes`` (the parameters' shapes), every entry's size too.
    """
    path = os.fspath(path)
    sizes = _entry_sizes(path)
    if shapes is not None:
        _check_sizes(sizes, shapes, path)
    try:
        with np.load(path) as z:   # allow_pickle=False: a checkpoint never needs pickle
            entries = {key: z[key] for key in z.files}
    except Exception as e:         # BadZipFile, CRC errors, EOFError, bad .npy headers, ...
        raise CheckpointError(f"checkpoint {path} is corrupt: {_one_line(e)}") from None
    meta = _parse_meta(entries.pop("meta"), path, model_name)

    groups: dict[str, dict[str, np.ndarray]] = {prefix: {} for prefix in _PREFIXES}
    for key, value in entries.items():
        prefix = next(p for p in _PREFIXES if key.startswith(p))     # (_entry_sizes checked)
        groups[prefix][key[len(prefix):]] = value
    params, optimizer, trained = groups["param/"], groups["optim/"], groups["train/"]
    if not params:
        raise CheckpointError(f"checkpoint {path} has no parameters")
    for what, group in (("optimizer state", optimizer), ("trained weights (train/)", trained)):
        if not group:
            continue
        if set(group) != set(params):
            missing = sorted(set(params) - set(group))
            extra = sorted(set(group) - set(params))
            raise CheckpointError(f"checkpoint {path}: its {what} does not match the "
                                  f"parameters (missing {missing}, unexpected {extra})")
        for name, state in group.items():
            if state.shape != params[name].shape:
                raise CheckpointError(f"checkpoint {path}: its {what} for {name} has "
                                      f"shape {state.shape}, the parameter {params[name].shape}")
    return Checkpoint(params=params, optimizer=optimizer, arrays=groups["array/"], meta=meta,
                      trained=trained)


def read_meta(path: str | os.PathLike, *, model_name: str | None = None) -> dict[str, Any]:
    """Only the meta of a checkpoint (its position, config, ...), without reading the
    arrays; the same errors as ``load_checkpoint`` for a file that is not a checkpoint."""
    path = os.fspath(path)
    _entry_sizes(path)
    try:
        with np.load(path) as z:
            raw = z["meta"]
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is corrupt: {_one_line(e)}") from None
    return _parse_meta(raw, path, model_name)


def describe_position(meta: dict[str, Any]) -> str:
    """Where a checkpoint stands, in words: "the end of epoch 2" or "epoch 3, batch 40"."""
    epoch, batch = meta.get("epoch"), meta.get("batch")
    return f"the end of epoch {epoch}" if batch == 0 else f"epoch {epoch + 1}, batch {batch}"


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a directory, not a .npz file")
    if not os.path.isfile(path):   # a FIFO or a device: reading it could block
        raise CheckpointError(f"checkpoint {path} is not a regular file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a tinyalex checkpoint (not an .npz file, "
                              "or truncated)")


def _entry_sizes(path: str) -> dict[str, int]:
    """{entry: its uncompressed size} from the zip's directory, nothing decompressed; a
    CheckpointError for a file that is not a checkpoint, an entry name a checkpoint does not
    have, no meta or a meta too large to be one."""
    _check_file(path)
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt: {_one_line(e)}") from None
    sizes = {}
    for info in infos:
        key = info.filename.removesuffix(".npy")
        if key != "meta" and not (key.startswith(_PREFIXES) and info.filename.endswith(".npy")):
            raise CheckpointError(f"checkpoint {path} has an unexpected entry {key!r}")
        sizes[key] = info.file_size
    if "meta" not in sizes:
        raise CheckpointError(f"checkpoint {path} has no 'meta' entry")
    _check_size(path, "meta", sizes["meta"], MAX_META_BYTES)
    return sizes


def _check_sizes(sizes: dict[str, int], shapes: dict[str, tuple], path: str) -> None:
    """Each entry no larger than what it holds can take (see MAX_META_BYTES)."""
    largest = max(math.prod(shape) for shape in shapes.values())
    for key, size in sizes.items():
        prefix, _, name = key.partition("/")
        if prefix == "array":
            _check_size(path, key, size, MAX_ARRAY_BYTES)
        elif prefix in ("param", "optim", "train"):
            _check_size(path, key, size,
                        NPY_HEADER_BYTES + 16 * math.prod(shapes.get(name, (largest,))))


def _check_size(path: str, key: str, size: int, limit: int) -> None:
    if size > limit:
        raise CheckpointError(f"checkpoint {path}: its entry {key} would take {size:,} bytes "
                              f"when read, more than such an entry can ({limit:,}); the file "
                              f"is damaged or not a tinyalex checkpoint")


def _parse_meta(raw: np.ndarray, path: str, model_name: str | None) -> dict[str, Any]:
    try:
        meta = json.loads(raw.item())
    except (ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {path} has unreadable meta: {_one_line(e)}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} has meta that is not a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version!r}; this "
                              f"tinyalex {__version__} reads version {FORMAT_VERSION}")
    if model_name is not None and meta.get("model") != model_name:
        raise CheckpointError(f"checkpoint {path} holds model {meta.get('model')!r}, "
                              f"not {model_name!r}")
    return meta


# ---------------------------------------------------------------------------------------
# A checkpoint of a tinyalex model, checked for use


def load_model_checkpoint(path: str | os.PathLike, *, model_name: str | None = None,
                          training: bool = False) -> Checkpoint:
    """``load_checkpoint`` plus the checks of a trained tinyalex model (module docstring).

    Checks that meta names a known model ("model"), a positive "num_classes", as many
    distinct class names ("classes") and the model's "image_size"; that the parameters have
    exactly the names and shapes of that model, a float dtype and finite values; and that
    array/mean and array/std hold 3 finite numbers, std positive. With ``training``, also
    the state a resumed run continues from: "config" an object, "epoch" and "batch" whole
    numbers >= 0, "metrics" a list of one object per finished epoch, "best_val_acc",
    "schedule" and "running" of finite numbers, the optimizer state finite floats of the
    parameters' shapes, and the PCA arrays. Raises CheckpointError (one line) otherwise.
    """
    from tinyalex.model import ARCHS, param_shapes   # (the model module loads the layers)
    path = os.fspath(path)
    meta = read_meta(path, model_name=model_name)    # the arrays' shapes are known from it
    name, num_classes, classes = meta.get("model"), meta.get("num_classes"), meta.get("classes")
    if name not in ARCHS:
        raise CheckpointError(f"checkpoint {path} holds model {name!r}; tinyalex knows "
                              f"{', '.join(ARCHS)}")
    if not _whole(num_classes) or num_classes < 1:
        raise CheckpointError(f"checkpoint {path} has num_classes {num_classes!r}, "
                              f"expected a positive integer")
    if (not isinstance(classes, list) or len(classes) != num_classes
            or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes)):
        raise CheckpointError(f"checkpoint {path} should list {num_classes} distinct class "
                              f"names under 'classes', has {classes!r:.80}")
    side = ARCHS[name].input_shape[1]
    if meta.get("image_size", side) != side:
        raise CheckpointError(f"checkpoint {path} says image_size {meta.get('image_size')!r}, "
                              f"but the {name} model takes {side}x{side}")

    expected = param_shapes(ARCHS[name], num_classes)
    ckpt = load_checkpoint(path, model_name=model_name, shapes=expected)
    missing = sorted(set(expected) - set(ckpt.params))
    extra = sorted(set(ckpt.params) - set(expected))
    if missing or extra:
        raise CheckpointError(f"checkpoint {path} does not fit a {name} model with "
                              f"{num_classes} classes (missing {missing or '-'}, "
                              f"unexpected {extra or '-'})")
    for key, shape in expected.items():
        value = ckpt.params[key]
        if value.shape != shape:
            raise CheckpointError(f"checkpoint {path}: {key} has shape {value.shape}; a "
                                  f"{name} model with {num_classes} classes needs {shape}")
        _check_floats(value, f"checkpoint {path}: {key}")
    _check_arrays(ckpt, path, {"mean": (3,), "std": (3,)})
    if not np.all(ckpt.arrays["std"] > 0):
        raise CheckpointError(f"checkpoint {path}: array/std must be positive, "
                              f"got {ckpt.arrays['std']}")
    if training:
        _check_training_state(ckpt, path)
    return ckpt


def _check_training_state(ckpt: Checkpoint, path: str) -> None:
    meta = ckpt.meta

    def bad(what):
        return CheckpointError(f"checkpoint {path} cannot be resumed: {what}")

    if not isinstance(meta.get("config"), dict):
        raise bad(f"its 'config' is {meta.get('config')!r:.60}, not an object")
    for key in ("epoch", "batch"):
        if not _whole(meta.get(key)) or meta[key] < 0:
            raise bad(f"'{key}' is {meta.get(key)!r:.60}, not a whole number >= 0")
    metrics = meta.get("metrics")
    if (not isinstance(metrics, list) or len(metrics) != meta["epoch"]
            or not all(isinstance(row, dict) for row in metrics)):
        raise bad(f"'metrics' should hold a row for each of the {meta['epoch']} finished "
                  f"epochs, is {metrics!r:.60}")
    if not _finite(meta.get("best_val_acc")):
        raise bad(f"'best_val_acc' is {meta.get('best_val_acc')!r:.60}, not a number")
    schedule = meta.get("schedule")
    if not isinstance(schedule, dict) or not all(
            _finite(v) or v is None for k, v in schedule.items() if k != "name"):
        raise bad(f"'schedule' is {schedule!r:.80}, not an object of finite numbers")
    running = meta.get("running")
    if (not isinstance(running, dict)
            or not all(_finite(running.get(k)) for k in ("loss_sum", "seconds"))
            or not all(_whole(running.get(k)) and running[k] >= 0 for k in ("correct", "seen"))
            or running["correct"] > running["seen"]):
        raise bad(f"'running' is {running!r:.80}, not the sums of the epoch in progress")
    if set(ckpt.optimizer) != set(ckpt.params):
        raise bad("it has no optimizer state")
    for key, value in ckpt.optimizer.items():
        _check_floats(value, f"checkpoint {path}: the optimizer state of {key}")
    if meta["config"].get("ema") and not ckpt.trained:
        raise bad("it averages its weights (--ema) but holds no train/ weights")
    for key, value in ckpt.trained.items():
        _check_floats(value, f"checkpoint {path}: the trained weights of {key}")
    _check_arrays(ckpt, path, {"pca_eigval": (3,), "pca_eigvec": (3, 3)})


def _check_arrays(ckpt: Checkpoint, path: str, shapes: dict) -> None:
    for key, shape in shapes.items():
        value = ckpt.arrays.get(key)
        if value is None:
            raise CheckpointError(f"checkpoint {path} has no array/{key} (the training "
                                  f"data's statistics)")
        if value.shape != shape:
            raise CheckpointError(f"checkpoint {path}: array/{key} has shape {value.shape}, "
                                  f"expected {shape}")
        _check_floats(value, f"checkpoint {path}: array/{key}")


def _check_floats(value: np.ndarray, what: str) -> None:
    if value.dtype.kind != "f":
        raise CheckpointError(f"{what} has dtype {value.dtype}, expected floating point")
    if not np.all(np.isfinite(value)):
        raise CheckpointError(f"{what} contains NaN or infinite values")


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _json_default(value):
    """Let meta hold NumPy scalars and small arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"checkpoint meta: {type(value).__name__} is not JSON-serialisable")


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def load_model(path, route="fast"):
    """Load a checkpoint and turn it into a model in evaluation-ready form.

    The checkpoint is checked by checkpoint.load_model_checkpoint, as for every other use
    of a trained model (a known model, its class names, parameters of the right keys,
    shapes and float dtype, finite, and the data's normalisation). Parameters are cast to
    the model's dtype (float32).

    Returns (model, ckpt): an AlexNet holding the checkpoint's parameters and the
    Checkpoint (params, optimizer, arrays, meta). Raises CheckpointError (one line) for a
    missing, corrupt, foreign or mismatched checkpoint.
    """
    path = os.fspath(path)
    ckpt = load_model_checkpoint(path)
    from tinyalex.model import build_model
    model = build_model(ckpt.meta["model"], ckpt.meta["num_classes"], route=route)
    model.params = {key: np.ascontiguousarray(ckpt.params[key], dtype=model.dtype)
                    for key in model.params}
    return model, ckpt


def normalisation(ckpt, path="checkpoint"):
    """The training split's per-channel (mean, std) stored in a checkpoint (checked by
    load_model_checkpoint: 3 finite numbers each, std positive)."""
    return (np.asarray(ckpt.arrays["mean"], np.float32),
            np.asarray(ckpt.arrays["std"], np.float32))


def model_labels(ckpt, ds):
    """The model's class index of each of a dataset's classes, matched by name: (classes,) int64
    (a source may hold some of the model's classes, in any order). DataError for a class the
    checkpoint does not know."""
    known = {name: i for i, name in enumerate(ckpt.meta["classes"])}
    unknown = [c for c in ds.classes if c not in known]
    if unknown:
        raise DataError(f"{ds.source} has class(es) {', '.join(map(repr, unknown[:5]))} "
                        f"that the checkpoint does not know (it has: "
                        f"{', '.join(ckpt.meta['classes'])})")
    return np.array([known[c] for c in ds.classes], np.int64)
