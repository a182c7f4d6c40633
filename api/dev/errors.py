"""The one error of ``make run``'s servers."""


class EmbeddedServerError(RuntimeError):
    """An embedded server could not start; the message says why and what to do (no traceback needed)."""
