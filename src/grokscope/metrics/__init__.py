"""Torch-free measures shared by every stage: thresholds, milestones, regime labels and per-query aggregates."""
