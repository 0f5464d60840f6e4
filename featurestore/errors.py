"""One exception type for every user-facing problem: the CLI prints its message as one line and exits 2."""


class SiqaError(Exception):
    """A problem with the user's input, naming the file and what is wrong with it."""
