"""The one base of every error a user can fix (a bad recipe, a missing video, a damaged checkpoint, a
tracking server that does not answer): the CLI and the job entry points print its message, one sentence,
instead of a traceback. Each error keeps its own standard base too (ValueError, KeyError, RuntimeError)."""


class UserError(Exception):
    """An error whose message names the file, key or component and says what would fix it."""


def error_reason(error: BaseException, limit: int = 200) -> str:
    """A library's error as a clause inside one of ours: its first line, cut at a word (never mid-word)
    with "..." when longer than ``limit``."""
    lines = str(error).strip().splitlines()
    text = " ".join(lines[0].split()) if lines else type(error).__name__
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
