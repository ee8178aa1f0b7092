"""Circuit analyses over checkpoints: logit lens, causal tracing, bridge use, path comparison, per-query records."""
