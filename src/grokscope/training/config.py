"""Training recipes as typed configs: Wang et al.'s GPT-2 recipe, He et al.'s TRM recipe and the scaled tiers
(``docs/calibration.md``). Every field can be overridden with ``--set train.KEY=VALUE``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from grokscope.config import apply_overrides, check
from grokscope.errors import GrokscopeError
from grokscope.metrics import thresholds as th
from grokscope.models.family import LossSpec
from grokscope.models.registry import family as model_family

PRECISIONS = ("fp32", "bf16", "fp16")
MAX_STEPS = 10 ** 9  # a budget beyond this is a typo (the papers train ~1.5M steps); the schedule would not fit
MAX_SEED = 2 ** 63 - 1
MAX_THREADS = 256  # each OpenMP thread reserves a stack: 10^5 threads exhaust memory before the first step
# Metrics a stop rule may name: what the trainer logs at every evaluation (plus the families of metric names below).
RULE_METRICS = ("step", "epoch", "train_acc", "train_loss", "test_inferred_iid", "test_inferred_ood", "id_atomic",
                "ood_atomic", "train_inferred", "atomic_new", "new_old", "old_new", "new_new", "new_old_powered",
                "old_new_powered")
RULE_PREFIXES = ("loss/", "bridge_found_", "bridge_use_", "target_found_")


@dataclass(frozen=True)
class TrainConfig:
    model_config: str = "micro"  # named model config of the family (models/gpt.py, models/trm.py)
    # --- optimisation
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    weight_decay: float = 0.1
    decay_all: bool = False  # decay every weight (He et al.'s TRM) instead of >= 2-D weights only (GPT-2)
    warmup_steps: int = 100  # linear warm-up, then constant
    grad_clip: float = 0.0  # global-norm clipping; 0 = off
    batch_size: int = 512
    drop_last: bool = False  # the TRM recipe drops the incomplete final batch of an epoch
    precision: str = "bf16"  # fp32 | bf16 | fp16 (fp16 uses a GradScaler and needs CUDA)
    loss: str = "ce"  # ce | stablemax
    loss_positions: str = "default"  # default (family recipe) | answer (t only) | answer_end (t, </a>) | all
    ema_decay: float = 0.0  # EMA of the weights used for evaluation and checkpoints (TRM: 0.999); 0 = off
    grokfast_alpha: float = 0.0  # Grokfast-EMA filter (Lee et al. 2024): ema = a*ema + (1-a)*g; g += lambda*ema
    grokfast_lambda: float = 0.0  # 0 = off
    seed: int = 0
    # --- budget (steps or epochs) and stop rule
    max_steps: int = 7000
    max_epochs: float = 0.0  # if > 0, max_steps = int(max_epochs * |train| / batch_size)
    max_minutes: float = 0.0  # safety net only: a run it stops is marked cut_short and its findings not testable
    stop_when: str = ""  # e.g. "train_acc>=0.97&test_inferred_iid>=0.9": met on stop_patience evaluations in a row
    stop_patience: int = 3
    stop_margin_steps: int = 0  # keep training this many steps after the rule is met
    # Run to at least this many times the run's own saturation step (training accuracy >= 0.99, kept for 3
    # evaluations: the findings' t_sat), then stop, or stop once stop_when also holds; max_steps still caps. 0 = off.
    # The findings judge a bridge and a delay only from 3 x t_sat on (He et al. Fig. 2; docs/methods.md).
    sat_multiple: float = 0.0
    # --- evaluation and milestones
    eval_every: int = 100
    eval_every_epochs: float = 0.0  # if > 0, overrides eval_every (the TRM recipe: every 5 epochs)
    eval_batch_size: int = 2048
    eval_bridge_use: int = 256  # queries per set for the in-loop bridge use (interchange at r1); 0 = off
    sat_threshold: float = th.SAT_CHECKPOINT
    milestone_thresholds: str = ",".join(str(x) for x in th.MILESTONES)
    # --- checkpoints: step 0, every ckpt_dense_every until ckpt_dense_until, then ckpt_log_per_decade log-spaced
    # until ckpt_linear_from, then every ckpt_every; plus the final step.
    ckpt_dense_every: int = 100
    ckpt_dense_until: int = 1000
    ckpt_log_per_decade: int = 10
    ckpt_linear_from: int = 10_000
    ckpt_every: int = 10_000
    # --- machine
    threads: int | None = None  # CPU threads (None = every core this process may use)
    compile: bool | None = None  # torch.compile the forward + loss; None = on CUDA, and on a CPU where it pays

    def problems(self) -> list[str]:
        p = []
        for key in ("lr", "batch_size", "eval_batch_size", "ckpt_dense_every", "ckpt_every", "stop_patience"):
            if getattr(self, key) <= 0:
                p.append(f"train.{key} must be positive (got {getattr(self, key)})")
        for key in ("max_steps", "warmup_steps", "grad_clip", "weight_decay", "max_minutes", "stop_margin_steps",
                    "sat_multiple",
                    "max_epochs", "eval_every_epochs", "eval_bridge_use", "eps", "grokfast_lambda", "ckpt_dense_until",
                    "ckpt_log_per_decade", "ckpt_linear_from", "seed"):
            if getattr(self, key) < 0:
                p.append(f"train.{key} must be >= 0 (got {getattr(self, key)})")
        if self.seed > MAX_SEED:
            p.append(f"train.seed must be at most 2^63-1 = {MAX_SEED} (got {self.seed})")
        if self.max_steps > MAX_STEPS:
            p.append(f"train.max_steps {self.max_steps} is over the limit of {MAX_STEPS:.0e} steps; give a smaller "
                     f"budget")
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            p.append(f"train.threads must be in 1..{MAX_THREADS}, or none for every core (got {self.threads})")
        if self.eval_every <= 0 and self.eval_every_epochs <= 0:
            p.append("train.eval_every must be positive")
        for key in ("beta1", "beta2", "ema_decay", "grokfast_alpha"):
            if not 0 <= getattr(self, key) < 1:
                p.append(f"train.{key} must be in [0, 1) (got {getattr(self, key)})")
        if self.precision not in PRECISIONS:
            p.append(f"train.precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        if self.loss not in ("ce", "stablemax"):
            p.append(f"train.loss must be ce or stablemax (got {self.loss!r})")
        if self.loss_positions not in ("default", "answer", "answer_end", "all"):
            p.append(f"train.loss_positions must be default, answer, answer_end or all (got "
                     f"{self.loss_positions!r})")
        if not 0 < self.sat_threshold <= 1:
            p.append(f"train.sat_threshold must be in (0, 1] (got {self.sat_threshold})")
        if self.stop_when:
            try:
                parse_rule(self.stop_when)
            except ValueError as exc:
                p.append(str(exc))
        try:
            if not all(0 < x <= 1 for x in self.thresholds()):
                raise ValueError
        except ValueError:
            p.append(f"train.milestone_thresholds must be comma-separated numbers in (0, 1] (got "
                     f"{self.milestone_thresholds!r})")
        return p

    def thresholds(self) -> list[float]:
        return [float(x) for x in self.milestone_thresholds.split(",") if x.strip()]

    def loss_spec(self) -> LossSpec:
        return LossSpec(self.loss, self.loss_positions)


Condition = tuple[str, str, float]


def parse_rule(rule: str) -> list[Condition]:
    """'metric>=value' conditions joined by '&' -> [(metric, op, value)]; ops >=, <=, >, <; every metric must be
    one the trainer logs. The rule holds when every condition does."""
    parts = [part.strip() for part in rule.split("&")]
    if not all(parts):
        raise ValueError(f"stop_when {rule!r} has an empty condition (example: train_acc>=0.97&test_inferred_iid>=0.9)")
    return [_parse_condition(part) for part in parts]


def _parse_condition(rule: str) -> Condition:
    for op in (">=", "<=", ">", "<"):
        if op in rule:
            key, value = (part.strip() for part in rule.split(op, 1))
            try:
                number = float(value)
            except ValueError:
                break
            if key not in RULE_METRICS and not key.startswith(RULE_PREFIXES):
                raise ValueError(f"stop_when metric {key!r} is not one the trainer logs; use one of "
                                 f"{', '.join(RULE_METRICS)} or bridge_use_ood, bridge_found_ood, ...")
            if not math.isfinite(number):
                break
            return key, op, number
    raise ValueError(f"stop_when {rule!r} is not 'metric>=value' (example: test_inferred_iid>=0.95)")


def rule_holds(rule: list[Condition], metrics: dict) -> bool:
    def holds(key, op, value):
        x = metrics.get(key)
        return x is not None and {">=": x >= value, "<=": x <= value, ">": x > value, "<": x < value}[op]
    return all(holds(*condition) for condition in rule)


# Wang et al.'s GPT-2 recipe: AdamW (0.9, 0.999), lr 1e-4, 2k warm-up then constant, wd 0.1, clip 1.0, batch 512, fp16.
_GPT_PAPER = dict(model_config="wang", lr=1e-4, beta1=0.9, beta2=0.999, weight_decay=0.1, warmup_steps=2000,
                  grad_clip=1.0, precision="fp16", max_steps=1_500_000, eval_every=2000, ckpt_dense_every=2000,
                  ckpt_dense_until=40_000, ckpt_linear_from=50_000, ckpt_every=50_000)
# He et al.'s TRM recipe: AdamW (0.9, 0.95), wd 1.0 on every weight, lr 4e-5, 2k warm-up, SignSGD puzzle vector,
# stablemax CE + 0.5 q-halt BCE, EMA 0.999, batch 512 drop-last, 1,100 epochs, evaluation every 5 epochs. (The
# q-halt weight and the puzzle vector's lr 1e-4 and wd 1.0 are the trm's own settings: models/trm.py, TRMConfig.)
_TRM_PAPER = dict(model_config="paper", lr=4e-5, beta1=0.9, beta2=0.95, weight_decay=1.0, decay_all=True,
                  warmup_steps=2000, grad_clip=0.0, drop_last=True, precision="bf16", loss="stablemax",
                  ema_decay=0.999, max_epochs=1100,
                  eval_every_epochs=5, ckpt_linear_from=50_000, ckpt_every=50_000)
_SMOKE = dict(max_steps=60, eval_every=20, batch_size=64, warmup_steps=10, ckpt_dense_every=10, ckpt_dense_until=30,
              ckpt_linear_from=40, ckpt_every=20, eval_bridge_use=64)

# Presets any family can use (its named model config of the same name must exist) ...
GENERIC_PRESETS: dict[str, dict] = {
    "smoke": dict(model_config="smoke", **_SMOKE),
    "micro": dict(max_steps=12_000),
}
# ... and (family, preset) -> overrides of the TrainConfig defaults (which are the CPU micro gpt recipe).
TRAIN_PRESETS: dict[tuple[str, str], dict] = {
    ("gpt", "paper"): _GPT_PAPER,
    ("gpt", "mini"): dict(model_config="micro", max_steps=60_000, eval_every=500),
    ("gpt", "micro"): dict(max_steps=12_000),  # d128 L4, lr 1e-3, wd 0.1, betas (.9, .98), warm-up 100, bf16
    ("gpt", "smoke"): GENERIC_PRESETS["smoke"],
    ("trm", "paper"): _TRM_PAPER,
    # Scaled TRM: structure kept, lr 1e-4, about 5 epochs of warm-up.
    ("trm", "mini"): {**_TRM_PAPER, "model_config": "mini", "lr": 1e-4, "warmup_steps": 1500, "max_epochs": 800},
    # The CPU trm (docs/calibration.md): the structure kept (two shared post-norm blocks, token and channel mixing,
    # H/L recursion with gradients through the last H-cycle, a puzzle prefix, an untied head) at width 64, with a
    # recipe that learns on a CPU in minutes: lr 6e-3, wd 0.1 on every weight, CE, EMA 0.99 (and no q-halt loss:
    # model config micro).
    ("trm", "micro"): {**_TRM_PAPER, "model_config": "micro", "lr": 6e-3, "weight_decay": 0.1, "loss": "ce",
                       "ema_decay": 0.99, "warmup_steps": 100, "batch_size": 256,
                       "max_epochs": 0, "max_steps": 12_000, "eval_every_epochs": 0,
                       "eval_every": 500, "ckpt_linear_from": 10_000, "ckpt_every": 10_000},
    ("trm", "smoke"): {**_TRM_PAPER, **_SMOKE, "model_config": "smoke", "lr": 1e-3, "max_epochs": 0,
                       "max_steps": 40, "eval_every_epochs": 0, "precision": "fp32", "ckpt_dense_until": 20},
}


def train_presets(family: str) -> list[str]:
    return sorted({p for f, p in TRAIN_PRESETS if f == family} | set(GENERIC_PRESETS))


def resolve_train_config(family: str, preset: str, overrides: dict | None = None) -> TrainConfig:
    recipe = TRAIN_PRESETS.get((family, preset), GENERIC_PRESETS.get(preset))
    if recipe is None:
        raise GrokscopeError(f"unknown train preset {preset!r} for {family}; choose one of "
                             f"{', '.join(train_presets(family))}")
    cfg = dataclasses.replace(TrainConfig(), **recipe)
    if overrides:
        cfg = apply_overrides(cfg, overrides, what="train")
    return check(cfg)


RECIPE_KEYS = ("lr", "beta1", "beta2", "eps", "weight_decay", "decay_all", "warmup_steps", "grad_clip", "batch_size",
               "drop_last", "precision", "loss", "loss_positions", "ema_decay", "grokfast_alpha", "grokfast_lambda",
               "max_steps", "max_epochs")
# torch.compile on a CPU when train.compile is unset: on for a family from this many budgeted steps, where
# benchmarks/bench_compile_cpu.py measured the gain paying for a cold compile (2 threads, torch 2.13): the micro trm
# step 1.36x faster, paying after about 3,400 steps (25 s to compile); the micro gpt 1.03x, paying only after about
# 16,000, so it stays eager. docs/calibration.md §7.
CPU_COMPILE_FROM_STEPS = {"trm": 5_000}


def recipe_deviations(family_name: str, model_cfg, cfg: TrainConfig) -> dict[str, list]:
    """Where a run's recipe and model differ from the paper's (``{setting: [paper, used]}``), for the report."""
    if (family_name, "paper") not in TRAIN_PRESETS:
        return {}
    paper = resolve_train_config(family_name, "paper")
    out = {f"train.{k}": [getattr(paper, k), getattr(cfg, k)] for k in RECIPE_KEYS
           if getattr(paper, k) != getattr(cfg, k)}
    fam = model_family(family_name)
    paper_model = fam.config_cls(**fam.named_configs[paper.model_config])
    for f in dataclasses.fields(paper_model):
        if f.name not in fam.config_cls.SIZED_FROM_DATA and getattr(paper_model, f.name) != getattr(model_cfg, f.name):
            out[f"model.{f.name}"] = [getattr(paper_model, f.name), getattr(model_cfg, f.name)]
    return out
