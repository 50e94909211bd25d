"""The one exception type the CLIs turn into a one-line error and a non-zero exit."""


class FerEdgeError(Exception):
    """A user-facing error: bad input file, wrong option, corrupt model.

    The message must name the thing at fault (a path, a row, an option) and say what is wrong.
    """
