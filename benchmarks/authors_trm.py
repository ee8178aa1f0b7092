"""The original TRM code of He et al., imported from a folder the user points to, for a side-by-side timing in
``bench_gpu.py``. grokscope never includes that code: ``--authors-dir`` names the ``TRM_model`` folder of a clone
of the authors' repository (github.com/KaiyuHe998/IsGrokkingWorthwhile), whose modules import each other as
top-level ``models.*``.

What is used from the folder, by name only:

- ``models/recursive_reasoning/trm.py``: ``TinyRecursiveReasoningModel_ACTV1(config_dict)`` (a pydantic config)
  with ``initial_carry(batch)``;
- ``models/losses.py``: ``ACTLossHead(model, loss_type=...)``; ``forward(return_keys, carry=, batch=)`` returns
  ``(carry, loss, metrics, outputs, all_halted)``;
- optional, each left out with a note when absent: ``models/sparse_embedding.py``'s
  ``CastedSparseEmbeddingSignSGD_Distributed`` (the puzzle embedding's SignSGD; at world size 1 it makes no
  torch.distributed call) and ``models/ema.py``'s ``EMAHelper`` (the weight EMA their training loop updates after
  every step).

The training step mirrors their pretrain script: model and loss head built under ``with torch.device(device)``,
the loss head compiled with ``torch.compile``, the carry from ``initial_carry`` made once under the device, the
loss divided by the global batch size before backward, SignSGD for the puzzle embedding then AdamW (their
``AdamATan2`` falls back to plain AdamW: betas 0.9/0.95, weight decay on every weight; torch's default
implementation, as their code builds it, where grokscope's AdamW is fused on CUDA), then the EMA. Both codes run in
one process, so they share its settings (threads, TF32).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

IGNORE = -100  # the label value both codes' losses skip
MODEL_MODULE, LOSS_MODULE = "models.recursive_reasoning.trm", "models.losses"
SIGN_SGD_MODULE, EMA_MODULE = "models.sparse_embedding", "models.ema"


class AuthorsCodeError(Exception):
    """The folder is missing or its code does not import: one line saying how to fix it."""


@dataclass
class AuthorsCode:
    folder: Path
    model_cls: type
    loss_head_cls: type
    sign_sgd_cls: type | None  # None: the puzzle embedding is not trained (noted in the row)
    ema_cls: type | None  # None: no EMA update (noted in the row)


def load(folder: str | Path) -> AuthorsCode:
    """Import the authors' model and loss head from ``folder`` (their ``TRM_model``)."""
    folder = Path(folder).expanduser().resolve()
    hint = "point --authors-dir at the TRM_model folder of a clone of github.com/KaiyuHe998/IsGrokkingWorthwhile"
    if not folder.is_dir():
        raise AuthorsCodeError(f"--authors-dir {folder}: no such folder; {hint}")
    if not (folder / "models" / "recursive_reasoning" / "trm.py").is_file():
        raise AuthorsCodeError(f"--authors-dir {folder}: has no models/recursive_reasoning/trm.py; {hint}")
    _forget_other_models(folder)
    sys.path.insert(0, str(folder))
    try:
        model_cls = getattr(_import(MODEL_MODULE, folder), "TinyRecursiveReasoningModel_ACTV1", None)
        loss_head_cls = getattr(_import(LOSS_MODULE, folder), "ACTLossHead", None)
        if model_cls is None or loss_head_cls is None:
            raise AuthorsCodeError(f"--authors-dir {folder}: no TinyRecursiveReasoningModel_ACTV1 in {MODEL_MODULE} "
                                   f"or no ACTLossHead in {LOSS_MODULE}; {hint}")
        sign_sgd = getattr(_optional(SIGN_SGD_MODULE, folder), "CastedSparseEmbeddingSignSGD_Distributed", None)
        ema = getattr(_optional(EMA_MODULE, folder), "EMAHelper", None)
    finally:
        sys.path.remove(str(folder))  # their modules are imported; nothing else should resolve names there
    return AuthorsCode(folder, model_cls, loss_head_cls, sign_sgd, ema)


def _import(name: str, folder: Path):
    try:
        return importlib.import_module(name)
    except Exception as exc:  # their imports (pydantic, einops, ...) or a syntax error: one line, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise AuthorsCodeError(f"--authors-dir {folder}: importing {name} failed ({type(exc).__name__}: {first}); "
                               f"install what it imports (pip install pydantic einops) or point at their TRM_model "
                               f"folder") from None


def _optional(name: str, folder: Path):
    return _import(name, folder) if (folder / (name.replace(".", "/") + ".py")).is_file() else None


def _forget_other_models(folder: Path) -> None:
    """Their package is the top-level name ``models``: one imported from elsewhere would shadow theirs."""
    for name in [n for n in sys.modules if n == "models" or n.startswith("models.")]:
        origin = getattr(sys.modules[name], "__file__", None)
        if origin is None or not Path(origin).resolve().is_relative_to(folder):
            del sys.modules[name]


def he_config(model_cfg, batch_size: int, forward_dtype: str = "bfloat16") -> dict:
    """He et al.'s configuration of the original TRM, sized like grokscope's trm config ``model_cfg`` so both sides
    compute the same network (the paper's: hidden 1536, H_cycles 2, L_cycles 6, two layers, expansion 4, token-mixing
    MLP instead of attention, one halting step, a 16-slot puzzle prefix with the puzzle vector in its first slot)."""
    return dict(batch_size=batch_size, seq_len=model_cfg.seq_len, puzzle_emb_ndim=model_cfg.d_model,
                num_puzzle_identifiers=model_cfg.num_puzzle_ids, vocab_size=model_cfg.n_vocab_rows,
                H_cycles=model_cfg.H_cycles, L_cycles=model_cfg.L_cycles, H_layers=0, L_layers=model_cfg.n_layers,
                hidden_size=model_cfg.d_model, expansion=model_cfg.expansion,
                num_heads=8,  # unused: mlp_t replaces attention
                pos_encodings="none",  # their code knows "rope" and "learned"; any other value adds none
                halt_max_steps=1, halt_exploration_prob=0.1,  # exploration acts only with more than one step
                forward_dtype=forward_dtype, mlp_t=True, puzzle_emb_len=model_cfg.puzzle_emb_len,
                no_ACT_continue=True)


def batch_for(inputs: torch.Tensor, labels: torch.Tensor, vocab_size: int) -> dict[str, torch.Tensor]:
    """grokscope's encoded examples as their batch dict. Their embedding has ``vocab_size`` rows, so the last token id
    is clamped as grokscope's ``quirk_vocab_offset`` does."""
    top = vocab_size - 1
    return {"inputs": inputs.clamp(max=top).to(torch.int32),
            "labels": torch.where(labels == IGNORE, labels, labels.clamp(max=top)).to(torch.int32),
            "puzzle_identifiers": torch.zeros(len(inputs), dtype=torch.int32, device=inputs.device)}


@dataclass
class Recipe:
    """Their optimiser settings in He et al.'s runs (grokscope's ``trm paper`` recipe holds the same numbers)."""

    lr: float = 4e-5
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1.0
    puzzle_lr: float = 1e-4
    puzzle_weight_decay: float = 1.0
    ema: float = 0.999


def step_fn(code: AuthorsCode, config: dict, batch: dict[str, torch.Tensor], device: str, compile_: bool = True,
            recipe: Recipe = Recipe()):
    """One training step of their code on a fixed batch, as a callable (its loss head as ``step.head``), and a note
    on what the step includes."""
    with torch.device(device):
        model = code.model_cls(config)
        head = code.loss_head_cls(model, loss_type="stablemax_cross_entropy")
    head.train()
    optimizers, notes = [], []
    if code.sign_sgd_cls is not None and config["puzzle_emb_ndim"] > 0:
        optimizers.append(code.sign_sgd_cls(head.model.puzzle_emb.buffers(), lr=recipe.puzzle_lr,
                                            weight_decay=recipe.puzzle_weight_decay, world_size=1))
        notes.append("SignSGD puzzle embedding (world size 1: no torch.distributed call)")
    else:
        notes.append("no puzzle-embedding SignSGD (models/sparse_embedding.py absent)")
    optimizers.append(torch.optim.AdamW(head.parameters(), lr=recipe.lr, betas=recipe.betas,
                                        weight_decay=recipe.weight_decay))
    run = torch.compile(head) if compile_ else head
    ema = None
    if code.ema_cls is not None and recipe.ema > 0:
        ema = code.ema_cls(mu=recipe.ema)
        ema.register(run)
        notes.append(f"their EMAHelper {recipe.ema}")
    else:
        notes.append("no EMA (models/ema.py absent)")
    with torch.device(device):
        carry = {"carry": run.initial_carry(batch)}
    global_batch = len(batch["inputs"])

    def step() -> None:
        carry["carry"], loss, _, _, _ = run(return_keys=[], carry=carry["carry"], batch=batch)
        ((1 / global_batch) * loss).backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad()
        if ema is not None:
            ema.update(run)
    step.head = head  # for a caller that inspects the model (the tests)
    return step, "; ".join(notes)
