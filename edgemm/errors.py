"""One exception family for everything a user can get wrong.

The CLI maps :class:`EdgemmError` to a one-line message and the exit code
carried by the error class, never a traceback.
"""


class EdgemmError(Exception):
    """Base class of every error edgemm reports to a user."""

    exit_code = 2


class InputError(EdgemmError):
    """A path, file or value given by the user is missing or malformed."""

    exit_code = 3


class DataError(InputError):
    """The reference data directory is missing or incomplete."""

    exit_code = 4


class DependencyError(EdgemmError):
    """An optional dependency (converter stack, audio library, ...) is missing."""

    exit_code = 5


class GateError(EdgemmError):
    """A budget set for CI (accuracy drop, size, Edge TPU mapping) was missed; the artifacts stay on disk."""

    exit_code = 1
