"""The one exception the command line turns into a one-line error and a non-zero exit."""


class TinyAlexError(Exception):
    """A problem the user can fix (bad input, missing file, wrong flag): no traceback."""


class DataError(TinyAlexError):
    """Bad, missing or unreadable data."""


class CheckpointError(TinyAlexError):
    """A missing, corrupt or incompatible checkpoint."""
