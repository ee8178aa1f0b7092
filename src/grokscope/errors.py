"""User-facing errors: the CLI prints each problem on one line and exits with code 2, never a traceback."""

from __future__ import annotations


class GrokscopeError(Exception):
    """An error caused by the user's input (config, paths, data), with one or more one-line problems.

    Each problem names what is wrong and how to fix it. Raising this never leaves partial output behind: callers
    validate before writing, and writers use temporary names that are renamed only when complete.
    """

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


INTERRUPTED_MESSAGE = "interrupted; re-run the same command to continue"


class Interrupted(Exception):
    """The user stopped a study or sweep (Ctrl-C in one of its jobs): nothing failed. The CLI prints the message
    ("interrupted; re-run the same command to continue") and exits 130."""
