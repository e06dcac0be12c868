"""The one exception type for user errors: a one-line message saying what is wrong and what to do.

The CLI prints ``error: <message>`` and exits with status 2 for these, without a traceback;
anything else is a bug and keeps its traceback.
"""


class BurrowError(Exception):
    """A problem with the user's input or artefacts (bad file, mismatched memory, missing data)."""
