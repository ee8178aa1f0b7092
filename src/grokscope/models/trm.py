"""The Tiny Recursive Model (Jolicoeur-Martineau 2025) as He et al. ran it, with named stage hooks: the ``trm`` family.

Notable features:
- two shared post-norm blocks f(z, inj) = block2(block1(z + inj)) applied H_cycles x (L_cycles + 1) times; only
  the last H-cycle carries gradients (truncated BPTT); fixed random carries H_init / L_init (not trained);
- no attention: a token-mixing SwiGLU over the 21 positions (16-slot puzzle prefix + 5 tokens) and a channel
  SwiGLU, rms_norm without gain computed in fp32, weights stored fp32 and cast to ``forward_dtype`` at use (bf16 as
  the paper, or fp32);
- gate and up projections are two GEMMs on views of the fused weight (no activation-sized concatenation in the
  backward pass);
- two quirks of the authors' released code are reproduced by default, each behind a named flag
  (``docs/methods.md``): ``quirk_token_norm_over_positions`` (the token-mixing residual is rms-normalised over the
  position axis) and ``quirk_vocab_offset`` (ids run 1..d_vocab-1 but the embedding/head have d_vocab-1 rows, so
  the last id has no row);
- stages: ``stage.init`` (z_H), ``stage.H{i}_L{j}`` (z_L after each thinking update) and ``stage.H{i}_commit``
  (z_H after each commit): 15 stages at H_cycles 2, L_cycles 6 (He et al. §3). Hooks fire in the no-grad cycle
  too, so the logit lens and patching see every stage;
- family interface: the loss covers every non-pad label slot (the copied prompt, t and ``</a>``) plus an optional
  q-halt BCE; "bridge found" is He et al.'s any-stage, any-position logit-lens rate, the measure its findings read.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from grokscope.metrics.milestones import GROKKED_BY_FAMILY
from grokscope.models.family import LossSpec, ModelFamily
from grokscope.models.hooks import HookPoint
from grokscope.models.losses import IGNORE, sequence_mean_loss

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
PRECISION_DTYPES = {"bf16": "bfloat16", "fp32": "float32", "fp16": "float16"}


@dataclass
class TRMConfig:
    d_vocab: int = 2207  # from dataset.json (pad + tokens); see quirk_vocab_offset
    seq_len: int = 5
    d_model: int = 1536  # hidden_size D (He et al.'s TRM: 1536, 44.56M parameters)
    n_layers: int = 2  # L_layers: blocks in the shared network
    H_cycles: int = 2
    L_cycles: int = 6
    expansion: float = 4.0
    puzzle_emb_len: int = 16  # prefix slots; the learned puzzle vector sits in slot 0
    num_puzzle_ids: int = 1  # every example is puzzle 0 in the paper
    rms_norm_eps: float = 1e-5
    token_mlp_width: int | None = None  # inner width of the token-mixing SwiGLU (None: the original's rule, 256)
    forward_dtype: str | None = None  # bfloat16 | float32 | float16; None follows the train precision (bf16)
    quirk_token_norm_over_positions: bool = True
    quirk_vocab_offset: bool = True
    # The trm's own training settings (He et al. App.): kept with the family, so the shared train config holds only
    # what every family uses. ``--set q_halt_weight=0.5`` (or ``model.q_halt_weight``) reaches them.
    q_halt_weight: float = 0.5  # weight of the auxiliary BCE(q_halt, whole sequence correct); 0 = off
    puzzle_lr: float = 1e-4  # the puzzle vector's learning rate (SignSGD)
    puzzle_weight_decay: float = 1.0  # and its decoupled weight decay
    # Fields the dataset and the train precision size (a recipe comparison skips them).
    SIZED_FROM_DATA: ClassVar[tuple[str, ...]] = ("d_vocab", "seq_len", "forward_dtype")

    @property
    def n_positions(self) -> int:
        return self.puzzle_emb_len + self.seq_len

    @property
    def n_vocab_rows(self) -> int:
        return self.d_vocab - 1 if self.quirk_vocab_offset else self.d_vocab

    @property
    def n_stages(self) -> int:
        return 1 + self.H_cycles * (self.L_cycles + 1)

    @property
    def context_length(self) -> int:
        return self.seq_len

    def for_dataset(self, d_vocab: int, seq_len: int) -> "TRMConfig":
        return replace(self, d_vocab=d_vocab, seq_len=seq_len)

    def for_precision(self, precision: str) -> "TRMConfig":
        """The TRM casts its weights itself (fp32 master weights, forward in ``forward_dtype``); an explicit
        ``forward_dtype`` wins over the train precision."""
        return self if self.forward_dtype is not None else replace(self, forward_dtype=PRECISION_DTYPES[precision])

    def stage_names(self) -> list[str]:
        names = ["init"]
        for i in range(self.H_cycles):
            names += [f"H{i}_L{j}" for j in range(self.L_cycles)] + [f"H{i}_commit"]
        return names

    def draws_random(self) -> bool:
        """The trm's forward pass is deterministic (no dropout)."""
        return False

    def problems(self) -> list[str]:
        p = []
        for key in ("d_vocab", "seq_len", "d_model", "n_layers", "H_cycles", "L_cycles", "num_puzzle_ids"):
            if getattr(self, key) <= 0:
                p.append(f"model {key} must be positive (got {getattr(self, key)})")
        for key, limit in (("d_model", 65536), ("seq_len", 4096), ("num_puzzle_ids", 10 ** 6)):
            if getattr(self, key) > limit:
                p.append(f"model {key} {getattr(self, key)} is over the limit of {limit}")
        applications = self.H_cycles * (self.L_cycles + 1) * self.n_layers
        if applications > MAX_BLOCK_APPLICATIONS:
            p.append(f"H_cycles x (L_cycles + 1) x n_layers = {applications} block applications per step is over "
                     f"the limit of {MAX_BLOCK_APPLICATIONS} (the paper's TRM: 42); lower the cycles")
        if self.puzzle_emb_len < 1:
            p.append(f"puzzle_emb_len must be >= 1 (the puzzle vector's slot; got {self.puzzle_emb_len})")
        if self.token_mlp_width is not None and self.token_mlp_width <= 0:
            p.append(f"token_mlp_width must be positive (got {self.token_mlp_width})")
        for key in ("q_halt_weight", "puzzle_lr", "puzzle_weight_decay"):
            if not getattr(self, key) >= 0:
                p.append(f"model {key} must be >= 0 (got {getattr(self, key)})")
        if self.forward_dtype is not None and self.forward_dtype not in DTYPES:
            p.append(f"forward_dtype must be one of {', '.join(DTYPES)} (got {self.forward_dtype!r})")
        return p


TRM_CONFIGS = {
    "paper": dict(d_model=1536),  # 44.56M parameters, He et al.'s configuration
    "mini": dict(d_model=512),
    # docs/calibration.md: no q-halt loss at this width and budget
    "micro": dict(d_model=64, L_cycles=2, puzzle_emb_len=1, token_mlp_width=32, q_halt_weight=0.0),
    "smoke": dict(d_model=32, L_cycles=2, puzzle_emb_len=4),
}


def trunc_normal_(t: torch.Tensor, std: float) -> torch.Tensor:
    """JAX-style truncated normal on [-2σ, 2σ], rescaled so the truncated distribution has std σ."""
    # std of a standard normal truncated to [-2, 2] is 0.87962566...; draw with σ / that to hit σ after truncation.
    with torch.no_grad():
        return nn.init.trunc_normal_(t, 0.0, std / 0.8796256610342398, -2 * std / 0.8796256610342398,
                                     2 * std / 0.8796256610342398)


def swiglu_width(width: int, expansion: float) -> int:
    inner = round(expansion * width * 2 / 3)
    return 256 * math.ceil(inner / 256)  # ceil to a multiple of 256 as the original


def rms_norm(x: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x = x.float()
    return (x * torch.rsqrt(x.square().mean(dim, keepdim=True) + eps)).to(dtype)


class CastedLinear(nn.Linear):
    """fp32 master weights cast to the activation dtype at use (the original's CastedLinear)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


def swiglu(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """down(silu(gate) * up) with the fused [2m, w] gate_up weight (the original's layout).

    Gate and up are two GEMMs on row slices of the weight (views) rather than one GEMM and a chunk: the split's
    backward would otherwise concatenate the two activation-sized gradients."""
    m = down.shape[1]
    gate_up, down = gate_up.to(x.dtype), down.to(x.dtype)
    return F.linear(F.silu(F.linear(x, gate_up[:m])) * F.linear(x, gate_up[m:]), down)


class ChannelSwiGLU(nn.Module):
    def __init__(self, width: int, expansion: float, inner: int | None = None):
        super().__init__()
        inner = inner or swiglu_width(width, expansion)
        self.gate_up = CastedLinear(width, 2 * inner, bias=False)
        self.down = CastedLinear(inner, width, bias=False)
        trunc_normal_(self.gate_up.weight, 1 / math.sqrt(width))
        trunc_normal_(self.down.weight, 1 / math.sqrt(inner))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swiglu(x, self.gate_up.weight, self.down.weight)


class TokenSwiGLU(ChannelSwiGLU):
    """SwiGLU over the position axis, shared across channels: x [B, D, L] -> [B, D, L] (the caller transposes;
    a transposed copy of the small [B, L, D] carry is far cheaper than a batched GEMM over B small matrices)."""
class Block(nn.Module):
    """Post-norm block: token mixing then channel mixing, each followed by rms_norm of the residual sum."""

    def __init__(self, cfg: TRMConfig):
        super().__init__()
        self.cfg = cfg
        self.token_mlp = TokenSwiGLU(cfg.n_positions, cfg.expansion, cfg.token_mlp_width)
        self.mlp = ChannelSwiGLU(cfg.d_model, cfg.expansion)
        self.hook_resid_mid = HookPoint()  # after token mixing and its norm, [B, L, D]
        self.hook_mlp_out, self.hook_resid_post = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.cfg.rms_norm_eps
        xt = x.transpose(1, 2)  # [B, D, L]
        mixed = xt + self.token_mlp(xt.contiguous())
        if self.cfg.quirk_token_norm_over_positions:  # the original normalises each channel over the positions
            x = rms_norm(mixed, -1, eps).transpose(1, 2)
        else:
            x = rms_norm(mixed.transpose(1, 2), -1, eps)
        x = self.hook_resid_mid(x.contiguous())
        return self.hook_resid_post(rms_norm(x + self.hook_mlp_out(self.mlp(x)), -1, eps))


MAX_BLOCK_APPLICATIONS = 4096  # 100x the paper's recursion: beyond it a step never ends on any machine


class TRM(ModelFamily):
    family = "trm"
    bridge_metric = "bridge_found"  # He et al.'s measure; no output slot of the trm is trained to emit b
    # The clean input is re-injected at every L-update: a patched slot must stay patched (models/readout.py).
    carried_patch = True
    # He et al.'s TRM groks on OOD compositions and plateaus at 0.66-0.70 (§4, Fig. 2A): OOD >= 0.5 counts.
    grokked = GROKKED_BY_FAMILY["trm"]
    loss_positions = ("default", "answer", "answer_end", "all")

    def __init__(self, cfg: TRMConfig):
        super().__init__()
        self.cfg = cfg
        self.token_offset = cfg.puzzle_emb_len
        D = cfg.d_model
        self.embed_scale = math.sqrt(D)
        self.embed_tokens = nn.Parameter(trunc_normal_(torch.empty(cfg.n_vocab_rows, D), 1 / math.sqrt(D)))
        # One learned puzzle vector per identifier, zero-initialised; trained by SignSGD (see param_groups).
        self.puzzle_emb = nn.Parameter(torch.zeros(cfg.num_puzzle_ids, D))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.lm_head = CastedLinear(D, cfg.n_vocab_rows, bias=False)
        trunc_normal_(self.lm_head.weight, 1 / math.sqrt(D))
        self.q_head = CastedLinear(D, 2, bias=True)
        with torch.no_grad():  # Q head starts at "don't halt": weight 0, bias -5
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        self.register_buffer("H_init", trunc_normal_(torch.empty(D), 1.0))
        self.register_buffer("L_init", trunc_normal_(torch.empty(D), 1.0))
        self.hook_embed = HookPoint()
        self.stage = nn.ModuleDict({name: HookPoint() for name in cfg.stage_names()})
        self.setup_hooks()

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.cfg.forward_dtype or "bfloat16"]

    def num_params(self, include_puzzle: bool = False) -> int:
        """Trainable parameters; the puzzle table is excluded by default, as in the paper's 44.56M."""
        return sum(p.numel() for n, p in self.named_parameters() if include_puzzle or n != "puzzle_emb")

    def input_embeddings(self, tokens: torch.Tensor, puzzle_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T] ids -> [B, P + T, D]: puzzle prefix + token embeddings, scaled by sqrt(D), in forward dtype."""
        B = tokens.shape[0]
        dtype = self.dtype
        ids = tokens if not self.cfg.quirk_vocab_offset else tokens.clamp(max=self.cfg.n_vocab_rows - 1)
        tok = F.embedding(ids, self.embed_tokens.to(dtype))
        pid = torch.zeros(B, dtype=torch.long, device=tokens.device) if puzzle_ids is None else puzzle_ids
        # The puzzle vector in slot 0, zeros in the other slots (built without in-place writes, so it also runs
        # under torch.func.vmap for stacked runs).
        puzzle = self.puzzle_emb.to(dtype)[pid].unsqueeze(1)
        prefix = torch.cat([puzzle, tok.new_zeros(B, self.cfg.puzzle_emb_len - 1, self.cfg.d_model)], dim=1)
        return self.hook_embed(self.embed_scale * torch.cat([prefix, tok], dim=1))

    def level(self, z: torch.Tensor, injection: torch.Tensor) -> torch.Tensor:
        """The shared network f(z, inj)."""
        z = z + injection
        for block in self.blocks:
            z = block(z)
        return z

    def _cycle(self, i: int, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor):
        for j in range(self.cfg.L_cycles):
            z_L = self.stage[f"H{i}_L{j}"](self.level(z_L, z_H + x))
        z_H = self.stage[f"H{i}_commit"](self.level(z_H, z_L))
        return z_H, z_L

    def carries(self, tokens: torch.Tensor, puzzle_ids: torch.Tensor | None = None):
        """Run the recursion; returns the final (z_H, z_L), each [B, P + T, D]."""
        x = self.input_embeddings(tokens, puzzle_ids)
        shape = x.shape
        z_H = self.stage["init"](self.H_init.to(x.dtype).expand(shape))
        z_L = self.L_init.to(x.dtype).expand(shape)
        with torch.no_grad():  # all but the last H-cycle carry no gradient (truncated BPTT)
            for i in range(self.cfg.H_cycles - 1):
                z_H, z_L = self._cycle(i, z_H, z_L, x)
        return self._cycle(self.cfg.H_cycles - 1, z_H, z_L, x)

    def unembed(self, z: torch.Tensor) -> torch.Tensor:
        """lm_head over the token positions (prefix dropped): [B, P + T, D] -> [B, T, V] in fp32."""
        return self.lm_head(z[:, self.cfg.puzzle_emb_len:]).float()

    def forward(self, tokens: torch.Tensor, puzzle_ids: torch.Tensor | None = None, return_q: bool = False):
        """tokens [B, T] (answer slots = pad) -> logits [B, T, V] (and the q_halt logit [B] with ``return_q``)."""
        z_H, _ = self.carries(tokens, puzzle_ids)
        logits = self.unembed(z_H)
        if not return_q:
            return logits
        q = self.q_head(z_H[:, 0]).float()
        return logits, q[:, 0]

    # ------------------------------------------------------------------------------------- family interface
    def forward_batch(self, batch):
        return self(batch.inputs, return_q=True)  # logits [B, 5, V], q_halt logit [B]

    def loss(self, batch, output, spec: LossSpec) -> torch.Tensor:
        if spec.positions not in self.loss_positions:
            raise ValueError(f"loss_positions {spec.positions!r} is not available for the trm")
        logits, q = output
        labels = batch.labels  # default = all: every non-pad slot (the copied prompt, t and </a>)
        if spec.positions in ("answer", "answer_end"):
            pos = torch.arange(labels.shape[1], device=labels.device)
            keep = pos == batch.prompt_len[:, None]
            if spec.positions == "answer_end":
                keep |= pos == batch.prompt_len[:, None] + 1
            labels = torch.where(keep, labels, IGNORE)
        loss = sequence_mean_loss(logits, labels, spec.kind)
        if self.cfg.q_halt_weight > 0:  # the q-halt head learns whether the whole sequence is right (BCE)
            with torch.no_grad():  # </a> per row as a tensor: no host read, so this also runs under vmap
                correct = self.exact_match(batch, output, batch.targets[:, 1:2], spec.positions).float()
            loss = loss + self.cfg.q_halt_weight * F.binary_cross_entropy_with_logits(q, correct)
        return loss

    def exact_match(self, batch, output, end_id, positions: str = "default") -> torch.Tensor:
        """Default: argmax per slot, pads dropped, cut at the first ``</a>`` (``end_id``: an id, or one per row
        [B, 1]), compared with the gold prompt + t: the string comparison of the original evaluation, vectorised (the
        copied prefix counts). ``answer`` / ``answer_end``: the t slot (and the ``</a>`` slot after it) only."""
        logits = output[0] if isinstance(output, tuple) else output
        pred = logits.argmax(-1)
        if positions in ("answer", "answer_end"):
            n = 1 if positions == "answer" else 2
            at = batch.prompt_len[:, None] + torch.arange(n, device=pred.device)
            return (torch.gather(pred, 1, at) == batch.targets[:, :n]).all(-1)
        B, T = pred.shape
        nonpad = pred != 0
        order = torch.sort((~nonpad).int(), dim=1, stable=True).indices
        compact = torch.gather(pred, 1, order)
        n_tokens = nonpad.sum(1)
        pos = torch.arange(T, device=pred.device)
        is_end = (compact == end_id) & (pos < n_tokens[:, None])
        cut = torch.where(is_end.any(1), is_end.int().argmax(1), n_tokens)
        gold_len = batch.prompt_len + 1
        same = (compact == batch.seq) | (pos >= gold_len[:, None])
        return (cut == gold_len) & same.all(1)

    def param_groups(self, weight_decay: float, decay_all: bool) -> list[dict]:
        groups = []
        for group in super().param_groups(weight_decay, decay_all):
            group["params"] = [p for p in group["params"] if p is not self.puzzle_emb]
            groups.append(group)
        # The puzzle vector is the original's sparse embedding, trained by SignSGD at its own lr and decay.
        return [g for g in groups if g["params"]] + [{"params": [self.puzzle_emb], "optimizer": "signsgd",
                                                      "lr": self.cfg.puzzle_lr,
                                                      "weight_decay": self.cfg.puzzle_weight_decay}]

    def flops_per_step(self, batch_size: int) -> float:
        c = self.cfg
        P, D = c.n_positions, c.d_model
        token_inner = c.token_mlp_width or swiglu_width(P, c.expansion)
        per_block = 2 * (P * D * 3 * swiglu_width(D, c.expansion) + D * P * 3 * token_inner)
        per_level = c.n_layers * per_block
        levels, grad_levels = c.H_cycles * (c.L_cycles + 1), c.L_cycles + 1
        head = 2 * c.seq_len * D * c.d_vocab
        return float(batch_size * ((levels - grad_levels) * per_level + 3 * (grad_levels * per_level + head)))

    def autocast(self, precision: str, device: str):
        return nullcontext()  # fp32 master weights are cast to forward_dtype at use

    def prompt(self, batch) -> torch.Tensor:
        return batch.inputs

    def readout_stages(self) -> list[tuple[str, str]]:
        return [(name, f"stage.{name}") for name in self.cfg.stage_names()]

    def patch_stages(self) -> list[tuple[str, str]]:
        # Not init (a constant carry: patching it is a no-op) and not the last commit: the head reads each slot on its
        # own, so the last commit's r1 slot cannot reach the answer slot.
        return self.readout_stages()[1:-1]

    def answer_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        # the answer's slot, the one before </a>: t in [h, r1, r2, t, </a>], the label in the comparison task's
        # [attr, <q>, e1, <mask>, e2, label, </a>]
        return self(tokens)[:, tokens.shape[1] - 2]
