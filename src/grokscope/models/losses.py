"""Loss functions: cross-entropy and the TRM's stablemax cross-entropy (He et al.'s TRM recipe; Prieto et al. 2025
introduced stablemax as a softmax that cannot overflow)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # label value the losses skip (same as grokscope.data.encoding.IGNORE)


def _stablemax_s(x: torch.Tensor) -> torch.Tensor:
    # s(x) = 1/(1-x) for x < 0, x + 1 for x >= 0. Each branch sees only its own half-line (clamp), so the unused
    # branch never produces inf (whose gradient, times 0, is nan).
    return torch.where(x < 0, 1 / (1 - x.clamp(max=0)), x.clamp(min=0) + 1)


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    s = _stablemax_s(x)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def token_losses(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token loss [B, T] (0 at ignored positions). Stablemax runs in float64 as the original code does."""
    mask = labels != IGNORE
    safe = torch.where(mask, labels, 0)
    if kind == "stablemax":
        logp = log_stablemax(logits.double(), dim=-1)
        nll = -torch.gather(logp, -1, safe.unsqueeze(-1)).squeeze(-1).to(logits.dtype)
    else:
        nll = F.cross_entropy(logits.float().flatten(0, -2), safe.flatten(), reduction="none").view(labels.shape)
    return nll * mask


def sequence_mean_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Loss averaged over the valid positions of each sequence, then over the batch: [] scalar."""
    mask = labels != IGNORE
    per_seq = token_losses(logits, labels, kind).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_seq.mean()
