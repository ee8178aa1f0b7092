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
           "to_transformer_lens", "build_data", "train", "RunSpec", "analyze", "transfer", "stack", "compare", "study",
           "sweep", "plan_study", "plan_sweep", "report", "export_tl", "build_family", "derive_transfer", "load_data",
           "export_data", "import_data", "data_config"]


_API_NAMES = frozenset(__all__) - {"__version__"}


def __getattr__(name: str):
    """The API's verbs, imported on first use. No subpackage shares a verb's name (``training``, ``studies``,
    ``reporting``, ``finetuning``, ``sweeps``), so ``gs.train`` is always the function and ``import
    grokscope.training.loop`` always the module."""
    if name == "RunSpec":  # the resolved unit of work ``train`` and the study executors take
        from grokscope.training.runspec import RunSpec

        return RunSpec
    if name in _API_NAMES:
        from grokscope import api

        return getattr(api, name)
    raise AttributeError(f"module 'grokscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API_NAMES])
