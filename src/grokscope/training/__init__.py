"""Training for grokking-length runs: one plain loop, exact resume, evaluation at a cadence."""
