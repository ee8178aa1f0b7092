"""benchmarks/bench_gpu.py and its loader of the authors' TRM (benchmarks/authors_trm.py), against a stand-in.

The stand-in below is NOT the authors' code: it is a minimal torch model written from scratch for these tests, with
the module paths and interface the loader uses (``models/recursive_reasoning/trm.py``:
``TinyRecursiveReasoningModel_ACTV1(config_dict)`` with ``initial_carry``; ``models/losses.py``: ``ACTLossHead``;
``models/sparse_embedding.py``: the puzzle embedding's SignSGD; ``models/ema.py``: ``EMAHelper``). It checks that
the loader passes every configuration key and the loss type, and that the benchmark runs their step end to end;
the speed of the real code is measured on a GPU by benchmarks/gpu_check.sh.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from grokscope.models.trm import TRMConfig, TRM_CONFIGS

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load_authors_trm():
    """benchmarks/authors_trm.py as a module, without putting benchmarks/ on sys.path for the whole session."""
    spec = importlib.util.spec_from_file_location("authors_trm", BENCHMARKS / "authors_trm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


authors_trm = _load_authors_trm()

STAND_IN = {
    "models/recursive_reasoning/trm.py": '''
        """A STAND-IN written from scratch for grokscope's tests (not the authors' TRM): the same module path and
        interface, a single embedding and head with a sparse puzzle embedding."""
        from dataclasses import dataclass

        import torch
        from torch import nn

        from models.sparse_embedding import SparseEmbedding

        KEYS = ("batch_size", "seq_len", "puzzle_emb_ndim", "num_puzzle_identifiers", "vocab_size", "H_cycles",
                "L_cycles", "H_layers", "L_layers", "hidden_size", "expansion", "num_heads", "pos_encodings",
                "halt_max_steps", "halt_exploration_prob", "forward_dtype", "mlp_t", "puzzle_emb_len",
                "no_ACT_continue")


        @dataclass
        class Carry:
            halted: torch.Tensor
            current_data: dict


        class TinyRecursiveReasoningModel_ACTV1(nn.Module):
            def __init__(self, config_dict: dict):
                super().__init__()
                missing = [k for k in KEYS if k not in config_dict]
                if missing:
                    raise ValueError(f"stand-in: config misses {missing}")
                c = config_dict
                self.dtype = getattr(torch, c["forward_dtype"])
                self.embed = nn.Embedding(c["vocab_size"], c["hidden_size"])
                self.head = nn.Linear(c["hidden_size"], c["vocab_size"])
                self.q_head = nn.Linear(c["hidden_size"], 2)
                self.puzzle_emb = SparseEmbedding(c["num_puzzle_identifiers"], c["puzzle_emb_ndim"], c["batch_size"])

            def initial_carry(self, batch):
                n = batch["inputs"].shape[0]
                return Carry(torch.ones(n, dtype=torch.bool), {k: torch.empty_like(v) for k, v in batch.items()})

            def forward(self, carry, batch):
                data = {k: torch.where(carry.halted.view(-1, *[1] * (v.ndim - 1)), batch[k], v)
                        for k, v in carry.current_data.items()}
                x = self.embed(data["inputs"].long()) + self.puzzle_emb(data["puzzle_identifiers"]).unsqueeze(1)
                z = torch.tanh(x.to(self.dtype))
                logits = self.head(z.float())
                q = self.q_head(z[:, 0].float())
                return Carry(torch.ones_like(carry.halted), data), {"logits": logits, "q_halt_logits": q[..., 0]}
        ''',
    "models/losses.py": '''
        """A STAND-IN written from scratch for grokscope's tests (not the authors' loss head)."""
        import torch
        import torch.nn.functional as F
        from torch import nn


        class ACTLossHead(nn.Module):
            def __init__(self, model, loss_type: str):
                super().__init__()
                if loss_type != "stablemax_cross_entropy":
                    raise ValueError(f"stand-in: unexpected loss_type {loss_type!r}")
                self.model = model

            def initial_carry(self, *args, **kwargs):
                return self.model.initial_carry(*args, **kwargs)

            def forward(self, return_keys, **model_kwargs):
                carry, outputs = self.model(**model_kwargs)
                labels = carry.current_data["labels"].long()
                mask = labels != -100
                per_slot = F.cross_entropy(outputs["logits"].transpose(1, 2), labels.clamp(min=0), reduction="none")
                loss = (per_slot * mask / mask.sum(-1, keepdim=True).clamp(min=1)).sum()  # summed over the batch
                return carry, loss, {}, {}, carry.halted.all()
        ''',
    "models/sparse_embedding.py": '''
        """A STAND-IN written from scratch for grokscope's tests (not the authors' sparse embedding)."""
        import torch
        from torch import nn


        class SparseEmbedding(nn.Module):
            def __init__(self, n: int, dim: int, batch_size: int):
                super().__init__()
                self.register_buffer("weights", torch.zeros(n, dim))
                self.register_buffer("local_weights", torch.zeros(batch_size, dim, requires_grad=True),
                                     persistent=False)
                self.register_buffer("local_ids", torch.zeros(batch_size, dtype=torch.int32), persistent=False)

            def forward(self, ids):
                with torch.no_grad():
                    self.local_weights.copy_(self.weights[ids])
                    self.local_ids.copy_(ids)
                return self.local_weights


        class CastedSparseEmbeddingSignSGD_Distributed(torch.optim.Optimizer):
            def __init__(self, params, world_size: int, lr: float = 1e-3, weight_decay: float = 1e-2):
                super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "world_size": world_size})

            @torch.no_grad()
            def step(self, closure=None):
                for group in self.param_groups:
                    grad = ids = weights = None
                    for p in group["params"]:
                        if p.requires_grad:
                            grad = p.grad
                        elif p.ndim == 1:
                            ids = p
                        else:
                            weights = p
                    if grad is not None:
                        rows = weights[ids.long()] * (1 - group["lr"] * group["weight_decay"])
                        weights[ids.long()] = rows - group["lr"] * torch.sign(grad)
        ''',
    "models/ema.py": '''
        """A STAND-IN written from scratch for grokscope's tests (not the authors' EMA helper)."""


        class EMAHelper:
            def __init__(self, mu=0.999):
                self.mu, self.shadow, self.updates = mu, {}, 0

            def register(self, module):
                self.shadow = {n: p.detach().clone() for n, p in module.named_parameters()}

            def update(self, module):
                for n, p in module.named_parameters():
                    self.shadow[n] = self.mu * self.shadow[n] + (1 - self.mu) * p.detach()
                self.updates += 1
        ''',
}


def write_stand_in(root: Path, files: dict[str, str] = STAND_IN) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


@pytest.fixture
def stand_in(tmp_path):
    folder = write_stand_in(tmp_path / "TRM_model")
    yield folder
    for name in [n for n in sys.modules if n == "models" or n.startswith("models.")]:
        del sys.modules[name]  # the stand-in's top-level ``models`` must not outlive the test


def smoke_trm() -> TRMConfig:
    return TRMConfig(**{**TRM_CONFIGS["smoke"], "d_vocab": 40}).for_precision("bf16")


def test_the_loader_takes_the_model_loss_head_optimiser_and_ema(stand_in):
    code = authors_trm.load(stand_in)
    assert code.model_cls.__name__ == "TinyRecursiveReasoningModel_ACTV1" and code.loss_head_cls.__name__ == \
        "ACTLossHead"
    assert code.sign_sgd_cls is not None and code.ema_cls is not None
    cfg = smoke_trm()
    config = authors_trm.he_config(cfg, batch_size=8, forward_dtype=cfg.forward_dtype)
    assert config["vocab_size"] == cfg.n_vocab_rows and config["mlp_t"] and config["halt_max_steps"] == 1
    inputs = torch.randint(1, cfg.d_vocab, (8, cfg.seq_len))  # the top id has no row: batch_for clamps it
    labels = torch.where(torch.rand(8, cfg.seq_len) < 0.3, -100, inputs)
    batch = authors_trm.batch_for(inputs, labels, config["vocab_size"])
    assert int(batch["inputs"].max()) < config["vocab_size"]
    assert torch.equal(batch["labels"] == -100, labels == -100)
    step, note = authors_trm.step_fn(code, config, batch, "cpu", compile_=False)
    assert "SignSGD" in note and "EMAHelper" in note
    head = step.head
    before = {n: p.detach().clone() for n, p in head.named_parameters()}
    step()
    step()
    moved = {n for n, p in head.named_parameters() if not torch.equal(before[n], p)}
    assert {"model.embed.weight", "model.head.weight"} <= moved  # AdamW stepped the weights the loss reaches
    assert head.model.puzzle_emb.weights.abs().sum() > 0  # SignSGD moved the (zero-initialised) puzzle vector


def test_the_loader_notes_what_a_folder_lacks(tmp_path):
    folder = write_stand_in(tmp_path / "TRM_model", {k: v for k, v in STAND_IN.items() if "ema" not in k})
    try:
        code = authors_trm.load(folder)
        assert code.ema_cls is None and code.sign_sgd_cls is not None
    finally:
        for name in [n for n in sys.modules if n == "models" or n.startswith("models.")]:
            del sys.modules[name]


@pytest.mark.parametrize("make, says", [
    (lambda root: root / "absent", "no such folder"),
    (lambda root: root, "has no models/recursive_reasoning/trm.py"),
    (lambda root: write_stand_in(root / "broken", {**STAND_IN, "models/losses.py": "import not_installed_module\n"}),
     "importing models.losses failed (ModuleNotFoundError"),
])
def test_a_bad_authors_folder_is_one_line(tmp_path, make, says):
    try:
        with pytest.raises(authors_trm.AuthorsCodeError) as exc:
            authors_trm.load(make(tmp_path))
    finally:
        for name in [n for n in sys.modules if n == "models" or n.startswith("models.")]:
            del sys.modules[name]
    message = str(exc.value)
    assert says in message and "\n" not in message and "--authors-dir" in message


def bench(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / "bench_gpu.py"), "--device", "cpu", "--quick", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_the_bench_refuses_a_bad_authors_dir_in_one_line(tmp_path):
    result = bench("--authors-dir", str(tmp_path / "nowhere"), "--json", str(tmp_path / "out.json"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().count("\n") == 0 and "no such folder" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out.json").exists()


@pytest.mark.ci
def test_the_bench_times_the_authors_step_beside_ours(stand_in, tmp_path):
    result = bench("--authors-dir", str(stand_in), "--json", str(tmp_path / "out.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    table = json.loads((tmp_path / "out.json").read_text())
    assert table["device"] == "CPU" and table["torch"] == torch.__version__
    assert set(table["seconds"]) == {"trm", "gpt", "micro", "stack"}
    authors = [r for r in table["rows"] if r["code"] == "authors (compiled)"]
    assert len(authors) == 1 and authors[0]["ms"] > 0 and authors[0]["ratio"] > 0
    assert authors[0]["peak_mib"] is None  # no CUDA: no peak memory
    ours = next(r for r in table["rows"] if r["code"] == "grokscope compiled")
    assert authors[0]["ratio"] == pytest.approx(authors[0]["ms"] / ours["ms"])
    assert table["ratios"]["trm_authors_over_grokscope_compiled"] == authors[0]["ratio"]
    stacked = next(r for r in table["rows"] if r["part"] == "stack" and "stacked" in r["code"])
    assert stacked["ratio"] > 0 and "eager" in stacked["note"]
    for part in ("trm", "gpt", "micro", "stack"):
        assert f"[{part}]" in result.stdout  # each part's elapsed time, as it finished
