"""Model families: ``gpt`` (a GPT-2 style decoder with optional layer sharing) and ``trm`` (the Tiny Recursive
Model), behind one interface (``family.py``); every activation an analysis reads or patches has a named hook point."""

from grokscope.models.registry import build_model, model_config, register_family  # noqa: F401
