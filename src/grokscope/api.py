"""The Python API: every stage the CLI runs, as a function, plus notebook handles on runs and studies.

    import grokscope as gs
    run = gs.open_run("reports/micro/runs/gpt_natural")
    run.metrics.plot(x="step", y=["train_acc", "test_inferred_iid"])
    model = run.model("last")
    gs.lens(model, run.dataset.probes["test_inferred_iid"])

The CLI is a thin layer over these functions (argument parsing and printing, keywords only), so the two cannot
drift. The handles (``Run``, ``Study``) and the analyses as functions (``lens``, ``trace``, ``bridge_use``) live in
``notebook.py``; ``execute`` runs one planned study job (``python -m grokscope.worker`` does it from a file).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import os
import shutil
import types
import typing
from pathlib import Path

import numpy as np

from grokscope import artifacts
from grokscope.config import route_sets, split_set_items
from grokscope.data.store import Dataset
from grokscope.errors import GrokscopeError
from grokscope.analysis import defaults
from grokscope.training.finetune import FineTuneBudget  # the fine-tune budget's defaults (no torch import)
from grokscope.notebook import Checkpoints, Run, Study, bridge_use, lens, trace  # noqa: F401 (the API's handles)

# torch is imported on first use (runs, models), so `grokscope data ...` and `--help` start fast.


def checked(func):
    """Check a verb's arguments against its annotations before it runs, as the CLI's parser does: a path must be a
    path (``~`` expanded), a text a text, a flag a bool (``force="no"`` is not yes), a count an int and a number a
    finite number (None only where the annotation allows it), so an API caller's odd argument is one line, not a
    TypeError deep inside pathlib or a flag silently read as true."""
    signature = inspect.signature(func)
    # Read on first call, once: the annotations name classes defined further down this module (Run, Study).
    hints = functools.cache(lambda: typing.get_type_hints(func))

    @functools.wraps(func)
    def verb(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise GrokscopeError(f"{func.__name__}(): {exc}") from None
        bound.arguments.update(check_arguments(func, bound.arguments, hints()))
        return func(*bound.args, **bound.kwargs)
    return verb


def check_arguments(func, arguments: dict, hints: dict | None = None) -> dict:
    """``arguments`` of ``func`` checked against its annotations (what ``checked`` does before a verb runs): paths
    come back as Paths with ``~`` expanded, anything else as given."""
    hints = typing.get_type_hints(func) if hints is None else hints
    return {name: _check_argument(func.__name__, name, value, hints.get(name)) for name, value in arguments.items()}


def _check_argument(verb: str, name: str, value, hint):
    """``value`` checked against ``hint`` (a path comes back as a Path with ``~`` expanded)."""
    if hint is None:  # not annotated (callbacks such as log, runner)
        return value
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) not in options:
            raise GrokscopeError(f"{verb}(): {name} is required (got None)")
        return value
    lists = [o for o in options if typing.get_origin(o) is list]
    if lists and typing.get_args(lists[0]) == (dict,):  # a stack's training calls
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, dict) for v in value):
            raise GrokscopeError(f"{verb}(): {name} must be a list of calls such as [{{'verb': 'train', 'kwargs': "
                                 f"{{...}}}}] (got {str(value)[:80]!r})")
        return list(value)
    if lists:  # --set items, a sweep's grid: a list of texts
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise GrokscopeError(f"{verb}(): {name} must be a list of texts such as ['train.lr=1e-3'] (got "
                                 f"{value!r})")
        return list(value)
    if Path in options and not (str in options and isinstance(value, str) and not isinstance(value, Path)):
        return _plain_path(artifacts.as_path(value, f"{verb}(): {name}").expanduser(), f"{verb}(): {name}",
                           output=name == "out")
    if str in options:
        if not isinstance(value, str):
            raise GrokscopeError(f"{verb}(): {name} must be text (got {value!r})")
    elif bool in options:
        if not isinstance(value, bool):
            raise GrokscopeError(f"{verb}(): {name} must be True or False (got {value!r})")
    elif int in options and float not in options:
        if isinstance(value, bool) or not isinstance(value, int):
            raise GrokscopeError(f"{verb}(): {name} must be a whole number (got {value!r})")
    elif float in options:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise GrokscopeError(f"{verb}(): {name} must be a finite number (got {value!r})")
    return value


def _plain_path(path: Path, what: str, output: bool = False) -> Path:
    """A path every later step can name: an input ``.`` or ``..`` becomes the folder it means; an output must be named
    (a command writes a folder whole and swaps it in, which would pull the current folder from under the shell); a
    symlink loop is one line here rather than a RuntimeError deep in pathlib."""
    if path.name in ("", ".", ".."):
        if output:
            raise GrokscopeError(f"{what}: {str(path)!r} is the current folder or one above it; name the folder to "
                                 f"write (e.g. --out results)")
        path = Path(os.path.abspath(path))
    try:
        path.resolve()
    except (RuntimeError, OSError) as exc:
        raise GrokscopeError(f"{what}: {path} cannot be resolved ({exc}); remove the link or choose another path") \
            from None
    return path


def to_transformer_lens(model):
    """A TransformerLens model with the same weights as a gpt model (extra ``interp``), in eval mode."""
    from grokscope.models.export_tl import to_transformer_lens as convert

    return convert(model)

# ------------------------------------------------------------------------------------------------ stages


@checked
def build_data(out: Path, preset: str = "micro", regime: str | None = None, aug: str | None = None,
               sets: list[str] | None = None, transfer: bool = False, seed: int | None = None,
               force: bool = False, task: str = "composition") -> Dataset:
    """One dataset (a pre-training regime, or with ``transfer`` its fine-tuning set), written to ``out``; with
    ``task="comparison"``, Wang et al.'s comparison task (``data/comparison.py``)."""
    from grokscope.data.build import build_dataset
    from grokscope.data.store import save
    from grokscope.data.transfer import build_transfer

    if task == "comparison":
        return _build_comparison(out, preset, regime, aug, sets, transfer, seed, force)
    if task != "composition":
        raise GrokscopeError(f"unknown task {task!r}; choose composition or comparison")
    cfg = data_config(preset, regime, aug, sets, seed).validate(transfer=transfer)
    artifacts.check_output_dir(Path(out), force, kind="dataset")
    ds = build_dataset(cfg)
    if transfer:
        ds = build_transfer(ds, cfg)
    save(ds, out, force=force)
    return ds


def _build_comparison(out: Path, preset: str, regime: str | None, aug: str | None, sets: list[str] | None,
                      transfer: bool, seed: int | None, force: bool) -> Dataset:
    from grokscope.data.comparison import ComparisonConfig, build_comparison, resolve_comparison_config
    from grokscope.data.store import save

    unused = [f"--{name} is a composition-task option; drop it for --task comparison" for name, given in
              (("regime", regime), ("aug", aug), ("transfer", transfer)) if given]
    if unused:
        raise GrokscopeError(unused)
    overrides = route_sets(split_set_items(sets), {"data": ComparisonConfig})["data"]
    if seed is not None:
        overrides["seed"] = seed
    cfg = resolve_comparison_config(preset, overrides).validate()
    artifacts.check_output_dir(Path(out), force, kind="dataset")
    ds = build_comparison(cfg)
    save(ds, out, force=force)
    return ds


@checked
def build_family(out: Path, preset: str = "micro", sets: list[str] | None = None, seed: int | None = None,
                 transfer: bool | None = None, force: bool = False, log=print) -> dict[str, Path]:
    """The five regimes on one graph into ``out/<regime>`` (and their transfer sets: by default when the graph has
    unused (entity, relation) pairs)."""
    from grokscope.data.build import build_family as build

    cfg = data_config(preset, None, None, sets, seed)
    problems = cfg.problems(transfer=bool(transfer))
    if problems:
        raise GrokscopeError([f"{p} (or build without transfer sets: --no-transfer)" if transfer else p
                              for p in problems])
    if transfer is None:
        transfer_problems = cfg.problems(transfer=True)
        transfer = not transfer_problems
        for problem in transfer_problems:
            log(f"note: transfer sets skipped: {problem}")
    return build(cfg, Path(out), force=force, transfer=transfer, log=log)


@checked
def derive_transfer(parent: Path, out: Path, sets: list[str] | None = None, force: bool = False) -> Dataset:
    """The transfer (fine-tuning) set of an existing pre-training dataset (He et al. §5.1)."""
    from grokscope.config import apply_overrides, from_dict
    from grokscope.data.config import DataConfig
    from grokscope.data.store import load, save
    from grokscope.data.transfer import build_transfer, check_transfer_parent

    ds = load(parent)
    check_transfer_parent(ds)
    base = from_dict(DataConfig, {**ds.meta["config"]}, f"{parent}/dataset.json: config") \
        if ds.meta.get("seed") is not None else \
        DataConfig(num_entities=ds.vocab.num_entities, num_relations=ds.vocab.num_relations,
                   out_degree=ds.meta["config"]["out_degree"], phi=0.0)
    cfg = apply_overrides(base, route_sets(split_set_items(sets), {"data": DataConfig})["data"], what="data")
    artifacts.check_output_dir(Path(out), force, kind="dataset")
    tds = build_transfer(ds, cfg)
    save(tds, out, force=force)
    return tds


@checked
def load_data(path: Path) -> Dataset:
    """A dataset folder, every file checked."""
    from grokscope.data.store import load

    return load(path)


@checked
def export_data(path: Path, out: Path, fmt: str = "original", force: bool = False) -> Path:
    """A dataset in the original authors' JSON format."""
    from grokscope.data.original_format import export_original

    if fmt != "original":
        raise GrokscopeError(f"unknown export format {fmt!r}; the only format is 'original'")
    return export_original(load_data(path), Path(out), force=force)


@checked
def import_data(folder: Path, out: Path, force: bool = False) -> Dataset:
    """An original-format dataset (bridges recovered from the atomic facts) in grokscope's format."""
    from grokscope.data.original_format import import_original
    from grokscope.data.store import save

    if not Path(folder).is_dir():
        raise GrokscopeError(f"{folder}: no such folder; point at an original-format export")
    artifacts.check_output_dir(Path(out), force, kind="dataset")
    ds = import_original(Path(folder))
    save(ds, out, force=force)
    return ds


@checked
def data_config(preset: str, regime: str | None = None, aug: str | None = None, sets: list[str] | None = None,
                seed: int | None = None):
    from grokscope.data.config import Augmentation, DataConfig, resolve_data_config

    aug_pairs = dict(route_sets(split_set_items([aug] if aug else []), {"aug": Augmentation})["aug"])
    overrides = route_sets(split_set_items(sets), {"data": DataConfig})["data"]
    if seed is not None:
        overrides["seed"] = seed
    return resolve_data_config(preset, regime, aug_pairs, overrides)


def train(data: Path | None = None, out: Path | None = None, model: str = "gpt", preset: str = "micro",
          sets: list[str] | None = None, resume: bool = False, force_config: bool = False, device: str = "auto",
          quiet: bool = False, spec=None, backend: str = "auto") -> dict | list[dict]:
    """Train (or resume) a run given by keywords, or by a resolved ``RunSpec`` (a fine-tune's too:
    ``finetuning.finetune_spec``); returns its summary. A list of specs is a stack: runs of one architecture trained
    in one process (``training/stack.py``), each in its own folder and resumable alone; returns their summaries."""
    # Checked here rather than by the ``checked`` wrapper, so that from ``grokscope train`` to the optimiser step is
    # four calls: api.train, loop.train, step.train_step, the optimiser's step. ``locals()`` holds exactly the
    # arguments at this point, so no parameter can be left out of the check.
    given = check_arguments(train, dict(locals()))
    data, out = given["data"], given["out"]
    from grokscope import finetuning
    from grokscope.data.store import load
    from grokscope.training.loop import train as train_stack
    from grokscope.training.request import prepare
    from grokscope.training.runspec import RunSpec
    from grokscope.training.stack import BACKENDS, stacks

    if spec is None:
        if data is None or out is None:
            raise GrokscopeError("train(): give data and out, or a spec")
        spec = RunSpec.build(data, out, model, preset, sets, resume=resume, force_config=force_config,
                             device=device, quiet=quiet)
    elif data is not None or out is not None:
        raise GrokscopeError("train(): give either a spec or data and out, not both")
    specs = [spec] if isinstance(spec, RunSpec) else list(spec)
    if not specs or not all(isinstance(s, RunSpec) for s in specs):
        raise GrokscopeError("train(): spec must be a RunSpec or a non-empty list of them (RunSpec.build)")
    if backend not in BACKENDS:
        raise GrokscopeError(f"unknown stacking backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    outs = [Path(s.out).resolve() for s in specs]
    if len(set(outs)) != len(outs):
        raise GrokscopeError("two stacked runs write to the same --out; give each run its own folder")
    with contextlib.ExitStack() as held:
        requests, begun = [], []
        try:
            for s in specs:
                if s.finetune is not None:  # its folder is held from its derived transfer set to the end of training
                    if not Path(s.out).exists():
                        begun.append(Path(s.out))
                    held.enter_context(finetuning.target_held(s))
                    requests.append(finetuning.finetune_request(s))
                    continue
                ds = load(s.data)
                train_cfg, model_cfg = s.configs(ds.vocab.d_vocab, ds.vocab.seq_len)
                requests.append(prepare(ds, Path(s.data), model_cfg, train_cfg, Path(s.out), s.resume,
                                        s.force_config, s.device, s.quiet))
        except BaseException:
            # Refused before any run trained: a fine-tune folder this call created (its lock, its derived transfer
            # set) goes again, still under its lock, so a refused command leaves nothing behind.
            for folder in begun:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        summaries = []
        for stack in stacks(requests, backend):
            summaries += train_stack(stack)
    return summaries[0] if isinstance(spec, RunSpec) else summaries


@checked
def analyze(run: Path, steps: str = defaults.STEPS, probes: str = defaults.PROBES,
            analyses: str = defaults.ANALYSES, data: Path | None = None,
            device: str = "auto") -> dict:
    from grokscope import runtime
    from grokscope.analysis.run_analysis import analyze as analyze_run

    return analyze_run(Path(run), steps, probes, analyses, data, runtime.pick_device(device))


@checked
def transfer(parent: str, out: Path, data: Path | None = None, preset: str = "scaled",
             sets: list[str] | None = None, control: bool = False, device: str = "auto", quiet: bool = False,
             resume: bool = False, new_fact_multiple: float = FineTuneBudget.new_fact_multiple,
             flat_evals: int = FineTuneBudget.flat_evals, flat_tolerance: float = FineTuneBudget.flat_tolerance,
             draw: str = "uniform") -> dict:
    """Fine-tune ``RUN[@STEP]`` on new facts (or train the control); returns the summary. It stops at ``max_steps``
    or, earlier, once it has run ``new_fact_multiple`` times the steps its New Fact accuracy needed to reach 0.99 and
    new+old has not moved by more than ``flat_tolerance`` for ``flat_evals`` evaluations (0: run to max_steps).
    ``draw``: how the derived transfer set draws its new facts' tails (uniform, as the authors; or kept: among the
    kept old facts' heads, so He et al.'s new+old category has a usable n)."""
    return train(spec=_finetune_spec(parent, out, data, preset, sets, control, device, quiet, resume,
                                     new_fact_multiple, flat_evals, flat_tolerance, draw))


def _finetune_spec(parent, out, data, preset, sets, control, device, quiet, resume, new_fact_multiple, flat_evals,
                   flat_tolerance, draw):
    """``transfer``'s checked arguments as the fine-tune's ``RunSpec`` (its recipe read from the parent's
    config.yaml), which trains like any run: alone, or stacked (``stack``)."""
    from grokscope.finetuning import finetune_spec
    from grokscope.training.config import TrainConfig

    overrides = route_sets(split_set_items(sets), {"train": TrainConfig})["train"]
    return finetune_spec(parse_run_ref(parent), out, data=data, preset=preset, overrides=overrides, control=control,
                         device=device, quiet=quiet, resume=resume,
                         budget=FineTuneBudget(new_fact_multiple, flat_evals, flat_tolerance), draw=draw)


def _bound(verb, kwargs: dict) -> dict:
    """A verb's keyword arguments, with its defaults, checked as the verb checks them."""
    try:
        bound = inspect.signature(verb).bind(**kwargs)
    except TypeError as exc:
        raise GrokscopeError(f"{verb.__name__}(): {exc}") from None
    bound.apply_defaults()
    return check_arguments(verb, bound.arguments)


def run_spec(call: dict):
    """The ``RunSpec`` a training call trains: ``{"verb": "train", "kwargs": {"spec": {...}}}``, the keywords of
    ``train`` (data, out, model, preset, sets, ...) or of ``transfer`` (a fine-tune, resolved from its parent)."""
    from grokscope.training.runspec import RunSpec

    verb, kwargs = (call.get("verb"), call.get("kwargs")) if isinstance(call, dict) else (None, None)
    if verb not in ("train", "transfer") or not isinstance(kwargs, dict):
        raise GrokscopeError(f"not a training call: {str(call)[:80]!r}; expected {{'verb': 'train' or 'transfer', "
                             f"'kwargs': {{...}}}}")
    if "backend" in kwargs:
        raise GrokscopeError("backend belongs to the whole stack (stack(calls, backend=...)), not to one call")
    if verb == "transfer":
        return _finetune_spec(**_bound(transfer, kwargs))
    if kwargs.get("spec") is not None:
        if set(kwargs) != {"spec"}:
            raise GrokscopeError(f"a stacked train call with a spec takes nothing beside it (got also "
                                 f"{', '.join(sorted(set(kwargs) - {'spec'}))}); set those in the spec")
        spec = kwargs["spec"]
        return spec if isinstance(spec, RunSpec) else RunSpec.from_dict(spec, "a stacked train call's spec")
    a = _bound(train, kwargs)
    if a["data"] is None or a["out"] is None:
        raise GrokscopeError("a stacked train call gives data and out, or one spec")
    return RunSpec.build(a["data"], a["out"], a["model"], a["preset"], a["sets"], resume=a["resume"],
                         force_config=a["force_config"], device=a["device"], quiet=a["quiet"])


@checked
def stack(calls: list[dict], backend: str = "auto") -> list[dict]:
    """Train several runs of one architecture stacked in one process: pre-training runs and fine-tunes alike (a
    study's fine-tunes of one model, seeds, grid points). Each call is a training call (``run_spec``); each run keeps
    its own folder, data order, optimiser and checkpoints, and resumes alone. Returns their summaries in order."""
    if not calls:
        raise GrokscopeError("stack(): calls must be a non-empty list of training calls "
                             "({'verb': 'train' or 'transfer', 'kwargs': {...}})")
    return train(spec=[run_spec(call) for call in calls], backend=backend)


COMPARE_KIND = artifacts.COMPARE_KIND
GRAPH_KEYS = ("num_entities", "num_relations", "out_degree", "ood_ratio", "seed")  # what fixes the graph and its split


def graph_key(meta: dict) -> str:
    """The knowledge graph a dataset was built on: regimes of one graph (natural, both_full, ...) share it."""
    cfg = meta.get("config") or {}
    return ", ".join(f"{k} {cfg.get(k)}" for k in GRAPH_KEYS)


def check_compare_target(out: Path) -> None:
    """``compare --out`` replaces only an earlier comparison, never another file."""
    if out.exists() and not artifacts.is_comparison(out):
        raise GrokscopeError(f"{out}: exists and is not a comparison grokscope wrote; choose another --out")
    artifacts.ensure_writable_parent(out)


@checked
def compare(a: str, b: str, probes: str = defaults.COMPARE_PROBES, out: Path | None = None,
            device: str = "auto") -> dict:
    """Do two checkpoints (of one run, or of two runs on the same graph) use the same inference path?"""
    from grokscope import runs, runtime
    from grokscope.analysis.circuits import compare_paths
    from grokscope.analysis.run_analysis import TRACE_EXAMPLES, resolve_probes, run_dataset, sample_rows

    device = runtime.pick_device(device)  # --device cuda without CUDA: one line, not a traceback
    (run_a, step_a), (run_b, step_b) = parse_run_ref(a), parse_run_ref(b)
    ds = run_dataset(run_a)
    if ds.task != "composition":
        raise GrokscopeError(f"{run_a}: path comparison reads the two-hop path (the bridge's stage and the causal map "
                             f"of h, r1, r2); a {ds.task} run has none: compare its `grokscope analyze` tables")
    graph_a, graph_b = graph_key(ds.meta), graph_key(run_dataset(run_b).meta)
    if graph_a != graph_b:
        raise GrokscopeError(f"{run_a} and {run_b} were trained on different graphs ({graph_a} vs {graph_b}); "
                             f"compare runs of one graph (its regimes may differ)")
    if out is not None:
        check_compare_target(Path(out))
    model_a, step_a = runs.load_model(run_a, step_a, device)
    model_b, step_b = runs.load_model(run_b, step_b, device)
    if model_a.cfg.d_vocab != model_b.cfg.d_vocab:
        raise GrokscopeError("the two runs have different vocabularies; compare runs trained on the same graph")
    rows = sample_rows(np.concatenate([ds.probe(t) for t in resolve_probes(ds, probes)]), TRACE_EXAMPLES)
    result = {"kind": COMPARE_KIND, "a": f"{run_a}@{step_a}", "b": f"{run_b}@{step_b}", "step_a": step_a,
              "step_b": step_b, "device": device, **compare_paths(model_a, model_b, ds, rows)}
    if out is not None:  # one file, written whole by a rename (no lock: it would leave a .lock in a user's folder)
        check_compare_target(Path(out))  # again: another process may have written it meanwhile
        artifacts.write_json_atomic(Path(out), result)
    return result


@checked
def export_tl(ref: str, out: Path | None = None, force: bool = False, check: bool = True) -> tuple[Path, float | None]:
    """A gpt checkpoint in TransformerLens's layout; with ``check``, the max logit difference of the live TL model."""
    import torch

    from grokscope import runs
    from grokscope.models.export_tl import tl_config, tl_state_dict

    run, step = parse_run_ref(ref)
    family = artifacts.read_config(run)["model"]["family"]
    if family != "gpt":
        raise GrokscopeError(f"{run}: a {family} run; only gpt models export to TransformerLens")
    model, step = runs.load_model(run, step)
    out = Path(out) if out else run / f"export_tl_step_{step:08d}"
    state, config = tl_state_dict(model), tl_config(model)

    def fill(tmp: Path) -> None:
        runs.save_tensors(state, tmp / "tl_model.safetensors")
        (tmp / "tl_config.json").write_text(json.dumps(config, indent=2))
    artifacts.write_owned_dir(out, force, "TransformerLens export", fill)
    diff = None
    if check:
        try:
            tl = to_transformer_lens(model)
        except GrokscopeError:
            tl = None
        if tl is not None:
            gen = torch.Generator().manual_seed(0)
            x = torch.randint(1, model.cfg.d_vocab - 1, (64, model.cfg.n_ctx), generator=gen)
            with torch.no_grad():
                diff = (model(x) - tl(x)).abs().max().item()
    return out, diff


@checked
def study(preset: str = "micro", out: Path | None = None, executor: str = "local", address: str | None = None,
          sets: list[str] | None = None, fresh: bool = False, runner=None, log=print, stack: bool = True) -> Path:
    """Run a whole study and write its report; returns the report's path. Runs of one architecture are trained
    stacked in one process unless ``stack=False``. The local executor runs each job with ``runner`` (default
    :func:`execute`, in this process), which is given the typed job (``studies/jobs.py``; its API call is
    ``job.call``) and returns its exit code."""
    from grokscope.studies.run import run_study

    out = Path(out) if out else Path("reports") / Path(preset).stem
    return run_study(preset, out, executor=executor, address=address, overrides=sets, fresh=fresh, log=log,
                     runner=runner or execute, stack=stack)


@checked
def plan_study(preset: str = "micro", out: Path | None = None, sets: list[str] | None = None,
               device: str = "auto") -> list[dict]:
    """Every job of a study with its step budget, parameters, training FLOPs and estimated time on ``device``;
    runs and writes nothing (``grokscope study --plan``)."""
    from grokscope.runtime import pick_device
    from grokscope.studies.estimate import plan_rows
    from grokscope.studies.plan import plan
    from grokscope.studies.spec import load_spec

    out = Path(out) if out else Path("reports") / Path(preset).stem
    spec = load_spec(preset, sets)
    return plan_rows(plan(spec, out), pick_device(device), log=lambda _msg: None, workers=spec.workers)


@checked
def plan_sweep(grid: list[str], preset: str = "micro", out: Path | None = None, model: str | None = None,
               device: str = "auto", task: str = "composition") -> list[dict]:
    """Every job of a sweep with its budget and estimated cost; runs and writes nothing (``sweep --plan``)."""
    from grokscope.runtime import pick_device
    from grokscope.studies.estimate import plan_rows
    from grokscope.sweeps import sweep_jobs

    out = Path(out) if out else Path("reports") / f"sweep_{Path(preset).stem}"
    _, data_jobs, train_jobs = sweep_jobs(preset, grid, out, model, task)
    return plan_rows([*data_jobs, *(job for _, job in train_jobs)], pick_device(device), log=lambda _msg: None)


@checked
def sweep(grid: list[str], preset: str = "micro", out: Path | None = None, executor: str = "local",
          address: str | None = None, model: str | None = None, runner=None, log=print, stack: bool = True,
          fresh: bool = False, task: str = "composition") -> Path:
    """Train over a grid of config values (stacked where the points share an architecture); returns the path of
    sweep.csv. ``task="comparison"``: on the preset's comparison dataset (its ``comparison`` section)."""
    from grokscope.sweeps import run_sweep

    out = Path(out) if out else Path("reports") / f"sweep_{Path(preset).stem}"
    return run_sweep(preset, grid, out, executor, address, model, log=log, runner=runner or execute, stack=stack,
                     fresh=fresh, task=task)


def execute(job) -> int:
    """Run one study job in this process: a typed job (``studies/jobs.py``), dispatched on its type (a training job,
    or a stack of them, trains its resolved specs as they are), or an API call ``{"verb": ..., "kwargs": ...}`` (a
    job file written before jobs were typed; the verbs: build_data, train, transfer, stack, analyze, compare).
    Returns the exit code: 0, 2 after a user error (printed one line each), 130 when interrupted."""
    from grokscope import errors
    from grokscope.studies import jobs
    from grokscope.training.runspec import RunSpec

    verbs = {"build_data": build_data, "train": train, "transfer": transfer, "analyze": analyze, "compare": compare,
             "stack": stack}
    try:
        if isinstance(job, jobs.Job):
            members = job.members if isinstance(job, jobs.StackJob) else (job,)
            if all(isinstance(m, jobs.TrainJob) for m in members):
                specs = [m.spec for m in members]
                train(spec=specs if isinstance(job, jobs.StackJob) else specs[0])
                return 0
            job = job.call  # the other stages run their verb with the job's keywords
        if not isinstance(job, dict) or job.get("verb") not in verbs or not isinstance(job.get("kwargs"), dict):
            raise GrokscopeError(f"not a job spec: {str(job)[:80]!r}; expected {{'verb': one of "
                                 f"{', '.join(verbs)}, 'kwargs': {{...}}}}")
        kwargs = dict(job["kwargs"])
        if "spec" in kwargs:  # a training call: one resolved spec, or a list of them (a stack)
            specs = kwargs["spec"]
            kwargs["spec"] = [RunSpec.from_dict(s) for s in specs] if isinstance(specs, list) \
                else RunSpec.from_dict(specs)
        verbs[job["verb"]](**kwargs)
    except errors.REPORTED as exc:
        return errors.report(exc)
    return 0


@checked
def report(path: Path, readme: Path | None = None) -> Path:
    """Rebuild a study's report; ``readme``: also write its measured tables into that README's marked section."""
    from grokscope.reporting.build import build_report

    path = Path(path)
    if not (path / "study.json").is_file():
        raise GrokscopeError(f"{path}: not a study folder (no study.json); run `grokscope study` first")
    return build_report(path, readme)


def parse_run_ref(ref: str) -> tuple[Path, str | None]:
    """'runs/x@1200' -> (runs/x, '1200'); 'runs/x' -> (runs/x, None), meaning the last checkpoint."""
    if "@" in str(ref):
        run, step = str(ref).rsplit("@", 1)
        return Path(run), step
    return Path(ref), None


@checked
def open_run(path: Path) -> Run:
    """A run folder as a notebook handle (``grokscope/notebook.py``)."""
    return Run(path)


@checked
def open_study(path: Path) -> Study:
    path = Path(path)
    if not (path / "study.json").is_file():
        raise GrokscopeError(f"{path}: not a study folder (no study.json)")
    return Study(path)
