"""Synthetic knowledge-graph datasets for two-hop composition (Wang et al.; He et al. App. B-C): generation,
augmentation, transfer sets, storage and the original authors' JSON format."""
