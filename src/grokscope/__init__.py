"""grokscope: study grokking and generalization circuits in transformers on two-hop compositional reasoning.

Pipeline (each arrow is a directory with a documented format): ``data build -> train -> analyze -> transfer ->
report``; ``study`` runs them all. From Python::

    import grokscope as gs
    run = gs.open_run("reports/smoke/runs/gpt_natural")
    gs.lens(run.model("last"), run.dataset.probes["test_inferred_iid"])

The public API (``api.py``) is imported on first use, so ``import grokscope`` stays cheap.
"""

import sys
import types

from grokscope.version import __version__

__all__ = ["__version__", "open_run", "open_study", "Run", "Study", "lens", "trace", "bridge_use",
           "to_transformer_lens", "build_data", "train", "train_group", "analyze", "transfer", "compare", "study",
           "sweep", "plan_study", "plan_sweep", "report", "export_tl"]


_API_NAMES = frozenset(__all__) - {"__version__"}


class _Package(types.ModuleType):
    """The package object: the API's verbs win over the subpackages that share their names.

    ``train``, ``study``, ``report``, ``transfer`` and ``sweep`` are both API functions and subpackages. Importing a
    subpackage (``from grokscope.train.loop import ...``, which the API itself does) makes Python set it as an
    attribute of this package, which would turn ``gs.train`` into a module after the first call of any verb. Looking
    the API up first keeps ``gs.train`` the function however the subpackages were imported; code that needs a
    subpackage imports it by its dotted path (``from grokscope.train import loop``), which never reads this attribute.
    """

    def __getattribute__(self, name: str):
        if name in _API_NAMES:
            from grokscope import api

            return getattr(api, name)
        return super().__getattribute__(name)


sys.modules[__name__].__class__ = _Package
