"""``RunSpec``: one training run, fully resolved, as the unit of work a study, a sweep or a worker passes around.

A spec is built once, from a family, a training preset and ``--set`` items: the preset's recipe and every override
are applied then, and what is stored is every resolved setting as a typed value (``lr`` 1e-3 and 0.001 are the
same float). Everything downstream (the stacked trainer, a subprocess worker reading its job file, a Ray task,
the study manifest deciding whether a finished run changed) reads the resolved values, never the command line.

The model config is stored without the vocabulary size, which the dataset decides: :meth:`RunSpec.configs` sizes it
for the dataset the run trains on.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from grokscope.artifacts import upgrade_settings
from grokscope.config import from_dict, route_sets, split_set_items, to_dict
from grokscope.data.config import TRANSFER_DRAWS
from grokscope.data.vocab import SEQ_LEN
from grokscope.errors import GrokscopeError
from grokscope.models.registry import FAMILIES, config_from_dict, family, model_config
from grokscope.training.config import TrainConfig, resolve_train_config
from grokscope.training.finetune import FineTuneBudget

FINETUNE_KEYS = ("parent", "step", "control", "preset", "budget", "draw")  # a fine-tune's source (RunSpec.finetune)
# A placeholder vocabulary size while resolving a model config that no dataset has sized yet (dropped again).
_UNSIZED_VOCAB = 128


def plain(value):
    """A value as JSON holds it (tuples as lists), so a spec read back from a file equals the one written."""
    return json.loads(json.dumps(value, default=str))


@dataclass(frozen=True)
class RunSpec:
    """What one training run is: its data, family, resolved model and train configs, output folder, how to run it
    (resume, device, verbosity), and for a fine-tune where it starts from. Frozen, JSON-round-trippable
    (``to_dict`` / ``from_dict``)."""

    data: str
    out: str
    family: str
    train: dict  # every TrainConfig field, resolved
    model: dict  # every model config field, resolved; d_vocab only where the user set it
    resume: bool = False
    force_config: bool = False
    device: str = "auto"
    quiet: bool = False
    # A fine-tune's source, as data: {parent, step, control, preset, budget, draw} (``finetuning.finetune_spec``).
    # Its ``data`` is the given transfer set, or empty: derived from the parent's dataset into ``OUT/data``.
    finetune: dict | None = None

    def __post_init__(self):
        if self.finetune is not None:  # checked however the spec was made (from_dict names its file first)
            _check_finetune(self.finetune, f"run spec {self.out}: finetune")

    @classmethod
    def build(cls, data: Path | str, out: Path | str, model: str = "gpt", preset: str = "micro",
              sets: list[str] | dict | None = None, **flags) -> "RunSpec":
        """Apply the preset and the ``--set`` items (``train.K=V``, ``model.K=V``, bare keys routed to the section
        that has them, or a ``{"train.K": V}`` mapping) once, and keep the resolved values. The arguments are
        ``api.train``'s, so ``RunSpec.build(**train_kwargs)`` works; ``model`` names the family."""
        family_name = model
        fam = family(family_name)
        items = list(sets.items()) if isinstance(sets, dict) else split_set_items(sets)
        routed = route_sets(items, {"train": TrainConfig, "model": fam.config_cls})
        train_cfg = resolve_train_config(family_name, preset, routed["train"])
        model_cfg = model_config(family_name, train_cfg.model_config, d_vocab=_UNSIZED_VOCAB,
                                 overrides=routed["model"])
        # The vocabulary is the dataset's unless the user set it (then the trainer checks it against the dataset).
        model = {k: v for k, v in to_dict(model_cfg).items() if k != "d_vocab" or "d_vocab" in routed["model"]}
        return cls(data=str(data), out=str(out), family=family_name, train=plain(to_dict(train_cfg)),
                   model=plain(model), **flags)

    def configs(self, d_vocab: int, seq_len: int = SEQ_LEN):
        """(TrainConfig, model config) as typed dataclasses, the model sized for a dataset of ``d_vocab`` tokens and
        ``seq_len`` positions. The spec was built with the composition task's length (5): where it still holds 5, a
        dataset of longer sequences (the comparison task's 7) sizes it (a 5 the user set could not fit it anyway);
        any other size the user set is kept, for the trainer to check."""
        train_cfg = from_dict(TrainConfig, self.train, f"{self.out}: train config")
        model_cfg = config_from_dict(self.family, {"d_vocab": d_vocab, **self.model}, f"{self.out}: model config")
        if model_cfg.context_length == SEQ_LEN != seq_len:
            model_cfg = model_cfg.for_dataset(model_cfg.d_vocab, seq_len)
        return train_cfg, model_cfg

    def settings(self) -> dict:
        """What the run computes from: a study decides from these whether a finished run would change."""
        settings = {"data": self.data, "train": self.train, "model": self.model}
        return settings if self.finetune is None else {**settings, "finetune": self.finetune}

    def to_dict(self) -> dict:
        """Every field, JSON-plain; ``finetune`` only for a fine-tune (a pre-training run's file is as before)."""
        out = plain(dataclasses.asdict(self))
        if out["finetune"] is None:
            del out["finetune"]
        return out

    @classmethod
    def from_dict(cls, data: dict, where: str = "run spec") -> "RunSpec":
        if not isinstance(data, dict):
            raise GrokscopeError(f"{where}: not a run spec (a mapping with data, out, family, train, model)")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(data) - names), [n for n in ("data", "out", "family", "train", "model")
                                                       if n not in data]
        if unknown or missing:
            raise GrokscopeError(f"{where}: " + "; ".join([*(f"unknown key {k!r}" for k in unknown),
                                                          *(f"missing key {k!r}" for k in missing)]))
        if data["family"] not in FAMILIES:
            raise GrokscopeError(f"{where}: unknown family {data['family']!r}; choose one of {', '.join(FAMILIES)}")
        if data.get("finetune") is not None:
            _check_finetune(data["finetune"], f"{where}: finetune")
        if isinstance(data["train"], dict) and isinstance(data["model"], dict):  # a spec file an older version wrote
            train, model = upgrade_settings(data["family"], data["train"], data["model"])
            data = {**data, "train": train, "model": model}
        return cls(**data)


def _check_finetune(source, where: str) -> None:
    """A fine-tune's source as ``finetuning.finetune_spec`` writes it: each value checked, one line per problem."""
    if not isinstance(source, dict) or set(source) != set(FINETUNE_KEYS):
        raise GrokscopeError(f"{where} must be a mapping of exactly {', '.join(FINETUNE_KEYS)}")
    problems = []
    if not isinstance(source["parent"], str) or not source["parent"]:
        problems.append(f"{where}.parent must be the parent run's folder")
    if isinstance(source["step"], bool) or not isinstance(source["step"], int) or source["step"] < 0:
        problems.append(f"{where}.step must be a checkpoint step, a whole number >= 0 (got {source['step']!r})")
    if not isinstance(source["control"], bool):
        problems.append(f"{where}.control must be true or false (got {source['control']!r})")
    if source["draw"] not in TRANSFER_DRAWS:
        problems.append(f"{where}.draw must be one of {', '.join(TRANSFER_DRAWS)} (got {source['draw']!r})")
    if not isinstance(source["preset"], str):
        problems.append(f"{where}.preset must be a transfer preset's name")
    try:
        budget = from_dict(FineTuneBudget, source["budget"], f"{where}.budget")
        problems += budget.problems()
    except GrokscopeError as exc:
        problems += exc.problems
    if problems:
        raise GrokscopeError(problems)
