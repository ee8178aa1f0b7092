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


# What ``report`` turns into lines and an exit code: the CLI, ``api.execute`` and the worker catch exactly these.
REPORTED = (GrokscopeError, Interrupted, KeyboardInterrupt, OSError)


def report(exc: BaseException, print_line=None) -> int | None:
    """Print a user-facing outcome as one line each and return its exit code: 2 for a user error or a place that
    refused a write, 130 for Ctrl-C. None for anything else (a bug: the caller lets it raise, with its traceback)."""
    import sys

    def say(line: str) -> None:
        (print_line or (lambda text: print(text, file=sys.stderr)))(line)

    if isinstance(exc, GrokscopeError):
        for problem in exc.problems:
            say(f"error: {problem}")
        return 2
    if isinstance(exc, Interrupted):  # a study or sweep stopped by the user says how to continue
        say(str(exc))
        return 130
    if isinstance(exc, KeyboardInterrupt):
        say("interrupted")
        return 130
    if isinstance(exc, OSError):  # the place itself refused (a name too long, no space left)
        where = exc.filename if exc.filename is not None else "a file"
        say(f"error: {where}: {exc.strerror or exc}; choose another path or free the space")
        return 2
    return None
