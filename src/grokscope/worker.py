"""``python -m grokscope.worker SPEC.json``: run one study or sweep job from its spec file, in a fresh process.

The local executor on a multi-GPU host and every Ray task start one of these per job. The file holds the job's API
call exactly as the study planned it (``<study>/jobs/<job>.json``; a training job's resolved ``RunSpec``), so
nothing is parsed back from a command line. The exit code is the job's: 0, 2 after a user error, 130 when
interrupted. A user can re-run one job of a study by hand the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grokscope import api, artifacts, errors
from grokscope.errors import GrokscopeError


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if len(args) != 1:
            raise GrokscopeError("usage: python -m grokscope.worker SPEC.json (a job file from <study>/jobs/)")
        call = artifacts.read_json(Path(args[0]), "point at a job file a study or sweep wrote (<out>/jobs/*.json)")
    except errors.REPORTED as exc:
        return errors.report(exc)
    return api.execute(call)


if __name__ == "__main__":
    sys.exit(main())
