"""Output paths of the `neighbours`, `saliency` and `export` commands, checked before the work.

A command that takes minutes (features of 45,000 images, a 228 MB export) checks first that
it will be able to write its result, so that a typing mistake in `--out` costs a second,
not the whole run. Each problem is a one-line TinyAlexError.

    check_new_file(path, inputs=())
                             its directory exists and is writable; path is missing or a regular
                             file (never a directory, device, FIFO or symbolic link, which
                             would be replaced) and is none of the command's input files
    check_replaceable(path)  the last check, just before a file is renamed onto path
    atomic_write(path, write) a file written beside path, fsynced and renamed onto it
    make_out_dir(path)       a directory, created if missing (with its parents), writable
    out_dir(path)            a context: make_out_dir, and the folders it made removed again if
                             the block fails leaving them empty
    new_folders_removed_on_failure(path)
                             that rule for any block that makes folders (the data download)
    missing_folders(path), remove_empty_folders(folders)
                             its two halves, for a longer life (tinyalex/rundir.py)
    writing(path)            a context: an OSError while writing becomes a one-line error
"""

import contextlib
import os
import stat
import tempfile
from typing import BinaryIO, Callable

from tinyalex.errors import TinyAlexError


def check_replaceable(path):
    """Refuse to replace anything but a regular file: an output never replaces a device node,
    a FIFO or a symbolic link (renaming onto it would put a file where a device was)."""
    path = os.fspath(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise TinyAlexError(f"cannot write {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise TinyAlexError(f"cannot write {path}: it is a directory")
    if stat.S_ISLNK(mode):
        raise TinyAlexError(f"cannot write {path}: it is a symbolic link (to "
                            f"{os.readlink(path)}); name the file itself, or another path")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or
                stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise TinyAlexError(f"cannot write {path}: it is {kind}, which tinyalex never replaces")


def check_new_file(path, inputs=()):
    """Fail early (before the expensive work) if `path` cannot become a file, or is one of
    the files the command reads (`inputs`)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    check_replaceable(path)
    for source in inputs:
        if os.path.exists(path) and os.path.exists(source) and os.path.samefile(path, source):
            raise TinyAlexError(f"cannot write {path}: it is the input {os.fspath(source)}; "
                                f"choose another output")
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
def out_dir(path):
    """`with out_dir(path): ...`: make_out_dir(path); if the block raises, the folders made here
    that are still empty are removed, so that a failed command leaves no empty --out behind."""
    with new_folders_removed_on_failure(path):
        make_out_dir(path)
        yield


@contextlib.contextmanager
def new_folders_removed_on_failure(path):
    """For a block that may create the folder `path` and its parents: if it raises, those of
    them that did not exist before it and are empty are removed again."""
    made = missing_folders(path)
    try:
        yield
    except BaseException:
        remove_empty_folders(made)
        raise


def missing_folders(path):
    """`path` and those of its parents that do not exist, the leaf first."""
    missing, head = [], os.path.abspath(path)
    while not os.path.lexists(head) and head != os.path.dirname(head):
        missing.append(head)
        head = os.path.dirname(head)
    return missing


def remove_empty_folders(folders):
    """Remove `folders` (the leaf first) while they are empty; stop at the first that is not."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            return


@contextlib.contextmanager
def writing(path):
    """`with writing(path): ...`: an OSError inside becomes TinyAlexError('cannot write PATH: ...')."""
    try:
        yield
    except OSError as e:
        raise TinyAlexError(f"cannot write {os.fspath(path)}: {e.strerror or e}") from None


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``.

    The temporary file is fsynced before the rename, so ``path`` always holds either the old
    complete file or the new complete file. If ``write`` raises (or the process is
    interrupted with Ctrl-C), the temporary file is removed, ``path`` is untouched, and the
    exception propagates.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                   dir=directory)
    except OSError as e:                   # an unwritable directory: name the file asked for
        e.filename = path
        raise
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        check_replaceable(path)            # never a device, FIFO or link replaced by a file
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.filename == tmp:
            e.filename = path              # name the file the user knows, not its temporary
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
