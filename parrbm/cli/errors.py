"""The command line's one error type (a leaf module: every command module imports it)."""


class UsageError(Exception):
    """A bad argument, file or config: reported in one line, exit code 2."""
