"""Errors that carry a message meant for the person who gave the input."""


class RecsightError(Exception):
    """Base class: the CLI prints the message (no traceback) and exits with `exit_code`."""

    exit_code = 1


class InputError(RecsightError):
    """A file, column, option or value the user supplied cannot be used as given."""

    exit_code = 2


class NeedsTimestampsError(RecsightError):
    """An operation needs event timestamps but the data has none."""

    exit_code = 2


class TrainingDiverged(RecsightError, FloatingPointError):
    """Training produced NaN or inf (loss or validation scores). A `FloatingPointError`
    too, for code that catches that; the CLI prints the message without a traceback."""

    exit_code = 1


class EngineError(RecsightError):
    """The requested execution engine cannot run: not installed, unreachable, or the command
    does not run on it."""

    exit_code = 2
