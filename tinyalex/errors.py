"""The one exception the command line turns into a one-line error and a non-zero exit."""


class TinyAlexError(Exception):
    """A problem the user can fix (bad input, missing file, wrong flag): no traceback."""


class DataError(TinyAlexError):
    """Bad, missing or unreadable data."""


class CheckpointError(TinyAlexError):
    """A missing, corrupt or incompatible checkpoint."""


def printable(text) -> str:
    """``text`` with each control character (newline, tab, escape, ...) written as its Python
    escape (``\\n``, ``\\t``, ``\\x1b``), other characters kept: a file or class name that holds
    one can neither split a one-line message nor break a picture's label."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
