"""grokscope: study grokking and generalization circuits in transformers on two-hop compositional reasoning.

Pipeline (each arrow is a directory with a documented format): ``data build -> train -> analyze -> transfer ->
report``; ``study`` runs them all. From Python::

    import grokscope as gs
    run = gs.open_run("reports/smoke/runs/gpt_natural")
    gs.lens(run.model("last"), run.dataset.probes["test_inferred_iid"])

The public API (``api.py``) is imported on first use, so ``import grokscope`` stays cheap.
"""

from grokscope.version import __version__

__all__ = ["__version__", "open_run", "open_study", "Run", "Study", "lens", "trace", "bridge_use",
           "to_transformer_lens", "build_data", "train", "train_group", "analyze", "transfer", "compare", "study",
           "sweep", "report", "export_tl"]


def __getattr__(name: str):
    if name in __all__:
        from grokscope import api

        return getattr(api, name)
    raise AttributeError(f"module 'grokscope' has no attribute {name!r}")
