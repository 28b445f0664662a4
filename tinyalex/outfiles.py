"""Output paths of the `neighbours`, `saliency` and `export` commands, checked before the work.

A command that takes minutes (features of 45,000 images, a 228 MB export) checks first that
it will be able to write its result, so that a typing mistake in `--out` costs a second,
not the whole run. Each problem is a one-line TinyAlexError.

    check_new_file(path)     its directory exists and is writable, and path is not a directory
    make_out_dir(path)       a directory, created if missing (with its parents), writable
    writing(path)            a context: an OSError while writing becomes a one-line error
"""

import contextlib
import os

from tinyalex.errors import TinyAlexError


def check_new_file(path):
    """Fail early (before the expensive work) if `path` cannot become a file."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise TinyAlexError(f"cannot write {path}: it is a directory")
    if not os.path.isdir(directory):
        raise TinyAlexError(f"cannot write {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise TinyAlexError(f"cannot write {path}: directory {directory} is not writable")


def make_out_dir(path):
    """Create the directory `path` (and its parents) unless it exists; fail if it cannot hold files."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise TinyAlexError(f"cannot write into {path}: it is a file, not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:                  # a parent is a file, no permission, read-only disk
        raise TinyAlexError(f"cannot create directory {path}: {e.strerror or e}") from None
    if not os.access(path, os.W_OK):
        raise TinyAlexError(f"cannot write into {path}: the directory is not writable")


@contextlib.contextmanager
def writing(path):
    """`with writing(path): ...`: an OSError inside becomes TinyAlexError('cannot write PATH: ...')."""
    try:
        yield
    except OSError as e:
        raise TinyAlexError(f"cannot write {os.fspath(path)}: {e.strerror or e}") from None
