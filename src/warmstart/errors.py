"""The one exception type users see: the CLI prints its message on one line and exits non-zero."""


class WarmstartError(Exception):
    """A problem with the user's input or environment, stated so the user can fix it."""
