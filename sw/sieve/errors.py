"""The one exception type the CLI turns into a clear one-line message and a non-zero exit."""


class SieveError(Exception):
    """A user-facing problem: bad input, missing files, a plan that does not fit a model.

    The message must say what is wrong and what to do, in one line.
    """
