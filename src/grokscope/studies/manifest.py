"""``study.json``, the manifest of a study: its spec, every job's record, resolved settings, status and time, and the
stage timings. It decides whether a finished job would change (``changes``), whether an unfinished one only had its
budget raised (``budget_only``), and marks a changed unfinished job stale. Older manifests are read in today's layout
by ``studies/migrations.py``.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from grokscope import artifacts
from grokscope.studies import migrations
from grokscope.studies.jobs import Job
from grokscope.studies.spec import StudySpec, spec_dict


def settings_hash(resolved: dict) -> str:
    return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:16]


class Manifest:
    """``study.json``: the spec, every job's command and record, its status and time, and stage timings."""

    def __init__(self, root: Path, data: dict):
        self.root, self.data = Path(root), data

    @classmethod
    def open(cls, root: Path) -> "Manifest":
        data = migrations.read_manifest(root)
        return cls(root, data if data is not None else {"schema": migrations.MANIFEST_SCHEMA, "jobs": {},
                                                         "stage_seconds": {}})

    def status(self, job: Job) -> str:
        return self.data["jobs"].get(job.name, {}).get("status", "pending")

    def budget_only(self, job: Job) -> bool:
        """Whether an unfinished training job's settings changed only in what a resume may change
        (``migrations.budget_only``)."""
        return migrations.budget_only((self.data["jobs"].get(job.name) or {}).get("resolved"), job)

    def changes(self, job: Job) -> list[str]:
        """How the job's resolved settings differ from the recorded ones (``key: old -> new``)."""
        return migrations.recorded_changes(self.data["jobs"].get(job.name) or {}, job)

    def changed_finished(self, jobs: list[Job]) -> list[str]:
        """Finished jobs whose resolved settings would now differ (continuing would mix two configurations), each
        with the settings that differ."""
        out = []
        for job in jobs:
            old = self.data["jobs"].get(job.name)
            if old and old.get("status") == "done" and job.done.exists() and (diff := self.changes(job)):
                out.append(f"{job.name} ({'; '.join(diff[:3])}{' ...' if len(diff) > 3 else ''})")
        return out

    def update(self, spec: StudySpec, jobs: list[Job]) -> None:
        self.data["spec"] = spec_dict(spec)
        recorded = self.data["jobs"]
        for job in jobs:
            old = recorded.get(job.name, {})
            stale = bool(old) and old.get("status") != "done" and bool(self.changes(job)) and not self.budget_only(job)
            entry = {**old, "stage": job.stage, "argv": job.argv, "call": job.call, "record": job.record,
                     "needs": job.needs,
                     "out": str(job.out), "resolved": job.resolved, "settings_hash": settings_hash(job.resolved)}
            if stale:
                entry["status"] = "stale"  # changed before it finished: its partial output is cleared
            recorded[job.name] = entry
        for name in [n for n in recorded if n not in {j.name for j in jobs}]:
            del recorded[name]  # jobs the new spec no longer has (never finished ones: changed_finished checked)
        self.save()

    def mark(self, job: Job, status: str, seconds: float | None = None, note: str | None = None,
             ran_with: dict | None = None) -> None:
        entry = self.data["jobs"].setdefault(job.name, {})
        entry.update(status=status, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        if ran_with:
            entry["ran_with"] = ran_with
        if seconds is not None:
            entry["seconds"] = round(seconds, 2)
        if note:
            entry["note"] = note
        self.save()

    def add_stage_time(self, stage: str, seconds: float) -> None:
        self.data["stage_seconds"][stage] = self.data["stage_seconds"].get(stage, 0.0) + seconds
        self.save()

    def save(self) -> None:
        # where the study is: a manifest read from another place moves its paths there (artifacts.relocated)
        self.data["root"] = str(self.root.resolve())
        artifacts.write_json_atomic(self.root / "study.json", self.data)

