"""The one base of every error a user can fix (a bad recipe, a missing video, a damaged checkpoint, a
tracking server that does not answer): the CLI and the job entry points print its message, one sentence,
instead of a traceback. Each error keeps its own standard base too (ValueError, KeyError, RuntimeError)."""


class UserError(Exception):
    """An error whose message names the file, key or component and says what would fix it."""
