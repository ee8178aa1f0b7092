"""Model families (PAPER_SPEC §3): ``gpt`` (GPT-2 style decoder, optional layer sharing) and ``trm`` (Tiny
Recursive Model). Both expose every activation an analysis reads or patches through named hook points."""

from grokscope.models.registry import build_model, model_config  # noqa: F401
