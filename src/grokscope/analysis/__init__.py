"""Circuit analyses over checkpoints (PAPER_SPEC §5-6): logit lens, causal tracing, comparison, regimes."""
