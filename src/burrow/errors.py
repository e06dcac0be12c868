"""The one exception type for user errors: a one-line message saying what is wrong and what to do.

The CLI prints ``error: <message>`` and exits with status 2 for these, without a traceback;
anything else is a bug and keeps its traceback.
"""


class BurrowError(Exception):
    """A problem with the user's input or artefacts (bad file, mismatched memory, missing data)."""


def first_line(e: BaseException) -> str:
    """The first line of ``e``'s message (a library's may run to many), or its type's name when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
