"""Errors that `gap` reports as one line (`error: ...`) instead of a traceback."""


class GapError(Exception):
    """Base: the message alone tells the user what went wrong and what to do."""


class ConfigError(GapError, ValueError):
    """A configuration value is invalid; the message names it and what would be valid (exit code 2)."""


class DataError(GapError, ValueError):
    """Bad or missing input data; the message names the file (and line) and what was expected (exit 2)."""


class ModelLoadError(GapError, RuntimeError):
    """The model could not be loaded; the message says from where and what to do."""


def exit_code(err: GapError) -> int:
    """2 for bad input or configuration (nothing was run), 1 for anything else."""
    return 2 if isinstance(err, (ConfigError, DataError)) else 1

