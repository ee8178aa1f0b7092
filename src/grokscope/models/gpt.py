"""GPT-2 style decoder (Wang et al.; He et al.'s auxiliary baseline) with optional cross-layer sharing (Wang et al.
App. E.2), as the ``gpt`` model family.

Notable features:
- pre-LN blocks, learned absolute positions, GELU (tanh, GPT-2's "gelu_new") MLP of width 4·d, LM head tied to the
  token embedding, GPT-2 initialisation (N(0, 0.02), residual projections N(0, 0.02/sqrt(2·n_layers))), optional
  dropout; compact vocabulary sized from ``dataset.json`` (no 50k BPE table: see ``docs/methods.md``);
- sharing: ``n_unique_blocks = k`` blocks applied in sequence until ``n_layers`` applications (layer l runs block
  l mod k), so ``n_layers=8, n_unique_blocks=4`` is Wang's "4 layers applied twice";
- hook points are per *applied* layer (``blocks.{l}.hook_resid_post``), so analyses see all 8 layers of a shared
  4-block model; the weights live in ``unique_blocks``;
- ``forward(tokens, at=positions)`` computes ln_final and logits only at the requested positions (training needs two);
- family interface: the loss covers the predictions of t and ``</a>`` (Wang et al.'s recipe); the logit lens reads
  the embeddings and every block output through ln_final and the tied head; He et al.'s "bridge found" counts only
  the r2 position, because the r1 position of a decoder has seen exactly the atomic query (h, r1), whose trained
  answer is b, so decoding b there measures recall of the first hop, not composition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from grokscope.models.family import LossSpec, ModelFamily
from grokscope.models.hooks import HookPoint
from grokscope.models.losses import token_losses


@dataclass
class GPTConfig:
    d_vocab: int = 2207  # from dataset.json: pad + entities + relations + 6 specials
    n_ctx: int = 5  # sequence length of the task (h, r1, r2, t, </a>)
    d_model: int = 128
    n_layers: int = 4  # applied layers (effective depth)
    n_heads: int = 4
    d_mlp: int | None = None  # default 4·d_model
    n_unique_blocks: int | None = None  # k < n_layers shares weights (Wang App. E.2); default: no sharing
    dropout: float = 0.0  # Wang/He: 0.1 on embeddings, attention and residual
    ln_eps: float = 1e-5
    init_std: float = 0.02
    # Fields the dataset sizes (a recipe comparison skips them).
    SIZED_FROM_DATA: ClassVar[tuple[str, ...]] = ("d_vocab", "n_ctx")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def mlp_width(self) -> int:
        return self.d_mlp or 4 * self.d_model

    @property
    def n_blocks(self) -> int:
        return self.n_unique_blocks or self.n_layers

    @property
    def context_length(self) -> int:
        return self.n_ctx

    def for_dataset(self, d_vocab: int, seq_len: int) -> "GPTConfig":
        return replace(self, d_vocab=d_vocab, n_ctx=seq_len)

    def for_precision(self, precision: str) -> "GPTConfig":
        return self  # autocast handles the gpt's precision

    def draws_random(self) -> bool:
        """Whether a training forward pass draws random numbers (dropout): stacked runs then need their own streams,
        which the vmap backend cannot give them."""
        return self.dropout > 0

    def problems(self) -> list[str]:
        p = []
        for key in ("d_vocab", "n_ctx", "d_model", "n_layers", "n_heads"):
            if getattr(self, key) <= 0:
                p.append(f"model {key} must be positive (got {getattr(self, key)})")
        for key, limit in (("n_layers", 1024), ("d_model", 65536), ("n_heads", 4096), ("n_ctx", 4096)):
            if getattr(self, key) > limit:
                p.append(f"model {key} {getattr(self, key)} is over the limit of {limit}")
        if self.n_heads > 0 and self.d_model % self.n_heads:
            p.append(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.n_unique_blocks is not None and not 0 < self.n_unique_blocks <= self.n_layers:
            p.append(f"n_unique_blocks must be in 1..n_layers={self.n_layers} (got {self.n_unique_blocks})")
        if not 0 <= self.dropout < 1:
            p.append(f"dropout must be in [0, 1) (got {self.dropout})")
        if not self.init_std >= 0:
            p.append(f"init_std must be >= 0 (got {self.init_std})")
        return p


GPT_CONFIGS = {
    "wang": dict(d_model=768, n_layers=8, n_heads=12, dropout=0.1),  # Wang et al. main model
    "wang_shared": dict(d_model=768, n_layers=8, n_heads=12, dropout=0.1, n_unique_blocks=4),  # App. E.2
    "he_aux": dict(d_model=768, n_layers=4, n_heads=12, dropout=0.1),  # He's auxiliary GPT-2 run
    "micro": dict(d_model=128, n_layers=4, n_heads=4),  # the CPU tier (docs/calibration.md)
    "micro_shared": dict(d_model=128, n_layers=4, n_heads=4, n_unique_blocks=1),  # one block applied 4 times
    "smoke": dict(d_model=32, n_layers=2, n_heads=2),
}


class AttentionHooks(nn.Module):
    def __init__(self):
        super().__init__()
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()  # [B, T, H, d_head]
        self.hook_pattern = HookPoint()  # [B, H, T, T]; only computed when hooked (else fused SDPA)
        self.hook_z = HookPoint()  # [B, T, H, d_head]


class MLPHooks(nn.Module):
    def __init__(self):
        super().__init__()
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()  # [B, T, d_mlp] before / after GELU


class LayerHooks(nn.Module):
    """The hook points of one applied layer (weights may be shared with other layers)."""

    def __init__(self):
        super().__init__()
        self.hook_resid_pre, self.hook_resid_mid, self.hook_resid_post = HookPoint(), HookPoint(), HookPoint()
        self.hook_attn_out, self.hook_mlp_out = HookPoint(), HookPoint()
        self.attn, self.mlp = AttentionHooks(), MLPHooks()


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.c_proj.residual_projection = True
        self.resid_drop = nn.Dropout(cfg.dropout)
        self.explicit = False  # the explicit softmax path (for vmap: fused SDPA has no batching rule on every device)

    def forward(self, x: torch.Tensor, hooks: AttentionHooks) -> torch.Tensor:
        B, T, D = x.shape
        H, dh = self.cfg.n_heads, self.cfg.d_head
        q, k, v = self.c_attn(x).split(D, dim=2)
        q = hooks.hook_q(q.view(B, T, H, dh))
        k = hooks.hook_k(k.view(B, T, H, dh))
        v = hooks.hook_v(v.view(B, T, H, dh))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, dh]
        dropout = self.cfg.dropout if self.training else 0.0
        if hooks.hook_pattern.has_hooks or self.explicit:  # explicit pattern so it can be read or patched
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(dh)
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            pattern = hooks.hook_pattern(scores.masked_fill(~mask, float("-inf")).softmax(-1))
            z = F.dropout(pattern, dropout, self.training) @ v
        else:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        z = hooks.hook_z(z.transpose(1, 2))  # [B, T, H, dh]
        return self.resid_drop(self.c_proj(z.reshape(B, T, D)))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.mlp_width)
        self.c_proj = nn.Linear(cfg.mlp_width, cfg.d_model)
        self.c_proj.residual_projection = True
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, hooks: MLPHooks) -> torch.Tensor:
        h = hooks.hook_pre(self.c_fc(x))
        h = hooks.hook_post(F.gelu(h, approximate="tanh"))
        return self.drop(self.c_proj(h))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, hooks: LayerHooks) -> torch.Tensor:
        x = hooks.hook_resid_pre(x)
        x = hooks.hook_resid_mid(x + hooks.hook_attn_out(self.attn(self.ln_1(x), hooks.attn)))
        return hooks.hook_resid_post(x + hooks.hook_mlp_out(self.mlp(self.ln_2(x), hooks.mlp)))


class HookedLayerNorm(nn.LayerNorm):
    """The final LayerNorm, with its output exposed as ``ln_final.hook_normalized`` (TransformerLens name)."""

    def __init__(self, d: int, eps: float):
        super().__init__(d, eps=eps)
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hook_normalized(super().forward(x))


class GPT(ModelFamily):
    family = "gpt"

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.wpe = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.unique_blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_blocks))
        self.blocks = nn.ModuleList(LayerHooks() for _ in range(cfg.n_layers))
        self.ln_final = HookedLayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        self.apply(self._init_weights)
        self.setup_hooks()

    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2 initialisation; residual projections scaled by 1/sqrt(2·n_layers) (applied depth).
        if isinstance(module, nn.Linear):
            std = self.cfg.init_std
            if getattr(module, "residual_projection", False):
                std /= math.sqrt(2 * self.cfg.n_layers)
            nn.init.normal_(module.weight, 0.0, std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, self.cfg.init_std)

    @property
    def W_E(self) -> torch.Tensor:
        return self.wte.weight

    @property
    def W_U(self) -> torch.Tensor:
        """Unembedding [d_model, d_vocab], tied to W_E."""
        return self.wte.weight.T

    def block_of_layer(self, layer: int) -> Block:
        return self.unique_blocks[layer % self.cfg.n_blocks]

    def residual(self, tokens: torch.Tensor) -> torch.Tensor:
        """Residual stream after the last block, before ln_final: [B, T, d_model]."""
        T = tokens.shape[1]
        pos = torch.arange(T, device=tokens.device)
        x = self.drop(self.hook_embed(self.wte(tokens)) + self.hook_pos_embed(self.wpe(pos)))
        for layer, hooks in enumerate(self.blocks):
            x = self.block_of_layer(layer)(x, hooks)
        return x

    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        """ln_final then the tied head (the logit lens applies this to intermediate layers too)."""
        return self.ln_final(resid) @ self.wte.weight.T

    def forward(self, tokens: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, V], or [B, P, V] at positions ``at`` [B, P] (saves ln_final + head work)."""
        x = self.residual(tokens)
        if at is not None:
            x = torch.gather(x, 1, at.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return self.unembed(x)

    # ------------------------------------------------------------------------------------- family interface
    def forward_batch(self, batch) -> torch.Tensor:
        return self(batch.seq, at=batch.at)  # [B, 2, V]: the predictions of t and </a>

    def loss(self, batch, output: torch.Tensor, spec: LossSpec) -> torch.Tensor:
        if spec.positions not in self.loss_positions:
            raise ValueError(f"loss_positions {spec.positions!r} is not available for the gpt; choose one of "
                             f"{', '.join(self.loss_positions)}")
        n = 1 if spec.positions == "answer" else 2  # default = answer_end: t and </a> (Wang et al.)
        return token_losses(output[:, :n], batch.targets[:, :n], spec.kind).mean()

    def exact_match(self, batch, output: torch.Tensor, end_id: int, positions: str = "default") -> torch.Tensor:
        # Greedy t then </a>; teacher forcing on t is exact, since the second prediction only matters when t is right.
        n = 1 if positions == "answer" else 2
        return (output[:, :n].argmax(-1) == batch.targets[:, :n]).all(-1)

    def flops_per_step(self, batch_size: int) -> float:
        c = self.cfg
        T, d, L = c.n_ctx, c.d_model, c.n_layers
        per_token = 2 * L * (4 * d * d + 2 * d * c.mlp_width)
        attention = 2 * L * 2 * T * T * d
        head = 2 * 2 * d * c.d_vocab  # logits at the two supervised positions
        return 3.0 * batch_size * (T * per_token + attention + head)

    def prompt(self, batch) -> torch.Tensor:
        # the sequence without its answer and </a>: (h, r1, r2) in composition, (attr, <q>, e1, <mask>, e2) in
        # comparison
        return batch.seq[:, :batch.seq.shape[1] - 2]

    def readout_stages(self) -> list[tuple[str, str]]:
        # L0 = embeddings, Ll = output of block l.
        return [("L0", "blocks.0.hook_resid_pre")] + [
            (f"L{l + 1}", f"blocks.{l}.hook_resid_post") for l in range(self.cfg.n_layers)]

    def patch_stages(self) -> list[tuple[str, str]]:
        # The final block's output is the prediction itself: patching it at r1 or h cannot reach the answer at r2.
        return self.readout_stages()[:-1]

    def answer_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        at = torch.full((len(tokens), 1), tokens.shape[1] - 1, dtype=torch.long, device=tokens.device)
        return self(tokens, at=at)[:, 0]

    def for_vmap(self) -> "GPT":
        for block in self.unique_blocks:
            block.attn.explicit = True
        return self

    def bridge_found_mask(self, n_stages: int, n_positions: int) -> torch.Tensor:
        mask = torch.zeros(n_stages, n_positions, dtype=torch.bool)
        mask[:, n_positions - 1] = True  # only the r2 position: r1 has seen just the atomic query (h, r1)
        return mask
