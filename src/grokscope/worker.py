"""``python -m grokscope.worker JOB.json``: run one study or sweep job from its job file, in a fresh process.

The local executor's workers and every Ray task start one of these per job. The file holds the job exactly as the
study planned it (``<study>/jobs/<job>.json``: ``Job.to_dict``, with its kind; a training job's resolved
``RunSpec``), so nothing is parsed back from a command line; a file holding an API call (``{"verb": ...,
"kwargs": ...}``, as job files were written before jobs were typed) runs that call. The exit code is the job's: 0,
2 after a user error, 130 when interrupted. A user can re-run one job of a study by hand the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grokscope import api, artifacts, errors
from grokscope.studies import jobs
from grokscope.errors import GrokscopeError


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if len(args) != 1:
            raise GrokscopeError("usage: python -m grokscope.worker JOB.json (a job file from <study>/jobs/)")
        data = artifacts.read_json(Path(args[0]), "point at a job file a study or sweep wrote (<out>/jobs/*.json)")
        job = jobs.from_dict(data, args[0]) if isinstance(data, dict) and "kind" in data else data
    except errors.REPORTED as exc:
        return errors.report(exc)
    return api.execute(job)


if __name__ == "__main__":
    sys.exit(main())
