"""The one exception the command line turns into a one-line error and a non-zero exit, and the
wording of the other things it makes one line of: names holding control characters, running
out of memory, and the command that installs a missing optional package."""

import re


class TinyAlexError(Exception):
    """A problem the user can fix (bad input, missing file, wrong flag): no traceback."""


class DataError(TinyAlexError):
    """Bad, missing or unreadable data."""


class CheckpointError(TinyAlexError):
    """A missing, corrupt or incompatible checkpoint."""


def install_hint(extra) -> str:
    """The command that installs the optional extra `extra` of pyproject.toml, written as the
    README installs tinyalex (from the repository's root), for every missing-package message."""
    return f'pip install -e ".[{extra}]"'


def printable(text) -> str:
    """``text`` with each control character (newline, tab, escape, ...) written as its Python
    escape (``\\n``, ``\\t``, ``\\x1b``), other characters kept: a file or class name that holds
    one can neither split a one-line message nor break a picture's label."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def out_of_memory(error: MemoryError, batch_size=None) -> str:
    """The one line for a MemoryError (NumPy's names the allocation that failed): with the
    batch size when the command has one, and what needs less memory."""
    wanted = re.search(r"allocate (\d+(?:\.\d+)?)\.? (\w*B)", str(error))   # "326. MiB"
    detail = f" (could not allocate {wanted.group(1)} {wanted.group(2)})" if wanted else ""
    if batch_size:
        return (f"out of memory at batch size {batch_size}{detail}; a smaller batch needs less "
                f"(try --batch-size {max(1, batch_size // 2)}), as do fewer --threads")
    return f"out of memory{detail}; fewer --threads or smaller inputs need less"
