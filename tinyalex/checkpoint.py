"""Checkpoints: one ``.npz`` file that plain NumPy can read, written atomically.

Layout of the file (``np.load(path)`` works, no ``allow_pickle`` needed):

    param/<name>    a model parameter, e.g. ``param/conv1.w`` (F, C, KH, KW)
    optim/<name>    the optimizer's state for that parameter (SGD: its velocity)
    array/<name>    any other array: data mean and std, RNG states as integer arrays, ...
    meta            a 0-d unicode array holding a JSON object: config, metrics rows,
                    schedule state, epoch, step, class names, model name ("model"),
                    "format_version" and "tinyalex_version"

For example::

    z = np.load("runs/x/last.npz")
    w = z["param/conv1.w"]
    meta = json.loads(z["meta"].item())

Atomic writes: the file is written to a temporary file in the same directory, flushed to
disk (fsync), and renamed over the old one with ``os.replace``, which is atomic on POSIX and
Windows. A crash or Ctrl-C mid-write leaves the previous checkpoint as it was and removes
the temporary file.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable

import numpy as np

from tinyalex import __version__
from tinyalex.errors import CheckpointError

FORMAT_VERSION = 1

_PREFIXES = ("param/", "optim/", "array/")


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns: arrays by name (without their prefix) and meta."""
    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``.

    The temporary file is fsynced before the rename, so ``path`` always holds either the old
    complete file or the new complete file. If ``write`` raises (or the process is
    interrupted with Ctrl-C), the temporary file is removed, ``path`` is untouched, and the
    exception propagates.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # Make the rename itself durable (POSIX only; a directory cannot be opened on Windows).
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save_checkpoint(path: str | os.PathLike, *, params: dict[str, np.ndarray],
                    optimizer: dict[str, np.ndarray], arrays: dict[str, np.ndarray],
                    meta: dict[str, Any]) -> None:
    """Write a checkpoint atomically (see the module docstring for the layout).

    Inputs:
    - params: dict name -> parameter array.
    - optimizer: dict name -> optimizer state array (``SGD.state_dict()``), may be empty.
    - arrays: dict name -> any other numeric array.
    - meta: a JSON-serialisable dict (NumPy scalars and arrays are converted to numbers and
      lists); "format_version" and "tinyalex_version" are added. Store the model name under
      "model" so that ``load_checkpoint(..., model_name=...)`` can check it.

    Raises CheckpointError if the file cannot be written (the old file is kept), ValueError
    for an array NumPy could only store by pickling, TypeError for meta that is not JSON.
    """
    entries: dict[str, np.ndarray] = {}
    for prefix, group in (("param/", params), ("optim/", optimizer), ("array/", arrays)):
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


def load_checkpoint(path: str | os.PathLike, *, model_name: str | None = None) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``, checking it as it goes.

    Raises CheckpointError with a one-line message if the file is missing, is not an
    ``.npz`` (zip) file, is truncated or corrupt, lacks ``meta`` or parameters, has a format
    version other than FORMAT_VERSION, or (when ``model_name`` is given) holds another model.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a directory, not a .npz file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a tinyalex checkpoint (not an .npz file, "
                              "or truncated)")
    try:
        with np.load(path) as z:   # allow_pickle=False: a checkpoint never needs pickle
            entries = {key: z[key] for key in z.files}
    except Exception as e:         # BadZipFile, CRC errors, EOFError, bad .npy headers, ...
        raise CheckpointError(f"checkpoint {path} is corrupt: {_one_line(e)}") from None

    if "meta" not in entries:
        raise CheckpointError(f"checkpoint {path} has no 'meta' entry")
    try:
        meta = json.loads(entries.pop("meta").item())
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

    groups: dict[str, dict[str, np.ndarray]] = {prefix: {} for prefix in _PREFIXES}
    for key, value in entries.items():
        prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
        if prefix is None:
            raise CheckpointError(f"checkpoint {path} has an unexpected entry {key!r}")
        groups[prefix][key[len(prefix):]] = value
    params, optimizer = groups["param/"], groups["optim/"]
    if not params:
        raise CheckpointError(f"checkpoint {path} has no parameters")
    if optimizer:
        if set(optimizer) != set(params):
            missing = sorted(set(params) - set(optimizer))
            extra = sorted(set(optimizer) - set(params))
            raise CheckpointError(f"checkpoint {path}: optimizer state does not match the "
                                  f"parameters (missing {missing}, unexpected {extra})")
        for name, state in optimizer.items():
            if state.shape != params[name].shape:
                raise CheckpointError(f"checkpoint {path}: optimizer state for {name} has "
                                      f"shape {state.shape}, the parameter {params[name].shape}")
    return Checkpoint(params=params, optimizer=optimizer, arrays=groups["array/"], meta=meta)


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
