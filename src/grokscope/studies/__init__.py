"""Whole studies: the spec (``spec.py``), the job plan and manifest (``plan.py``), executors and the run."""
