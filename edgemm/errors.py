"""One exception family for everything a user can get wrong.

The CLI maps :class:`EdgemmError` to a one-line message and the exit code
carried by the error class, never a traceback.
"""

import reprlib

MAX_MESSAGE = 2000  # characters of one error message


class EdgemmError(Exception):
    """Base class of every error edgemm reports to a user."""

    exit_code = 2

    def __str__(self) -> str:
        # The backstop of "one line": messages embed users' values and other libraries' errors, which
        # may be long or hold newlines; `quote` keeps the values short where a message is built.
        text = " ".join(super().__str__().splitlines())
        return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


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


MAX_QUOTED = 60  # characters of a user's value quoted in a message


def quote(value: object, limit: int = MAX_QUOTED) -> str:
    """`repr(value)` cut to `limit` characters, for quoting a user's value in an error message.

    reprlib never builds the whole repr: a value from a YAML alias bomb (450 bytes that expand to
    millions of items) would otherwise turn a one-line error into hundreds of megabytes.
    """
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, limit, limit
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = short.maxfrozenset = 8
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
