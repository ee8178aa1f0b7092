"""Training for grokking-length runs (PAPER_SPEC §4, DESIGN §6): one plain loop, exact resume, evaluation."""
