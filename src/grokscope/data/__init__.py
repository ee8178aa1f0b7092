"""Synthetic knowledge-graph datasets for two-hop composition (PAPER_SPEC §2): generation, augmentation,
transfer sets, storage and the original authors' JSON format."""
