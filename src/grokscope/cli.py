"""The ``grokscope`` command line: argument parsing and printing over the Python API (``api.py``).

Every user error is printed as ``error: <problem and fix>`` (one line per problem) with exit code 2; a usage error
(unknown command or option, a bad value type, a missing argument) prints typer's usage message and exits 2. No
traceback reaches the user for bad input.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from grokscope import api
from grokscope import errors
from grokscope.errors import GrokscopeError
from grokscope.reporting.console import print_dataset_summary, print_family_table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Grokking and generalization circuits in transformers on two-hop reasoning.")
data_app = typer.Typer(no_args_is_help=True, help="Build, inspect, export and import datasets (He et al. App. B-C).")
export_app = typer.Typer(no_args_is_help=True, help="Export trained models to other tools.")
app.add_typer(data_app, name="data")
app.add_typer(export_app, name="export")



def default(verb, name: str):
    """``verb``'s default for its keyword ``name``: every default is written once, in ``api.py``, and the command
    line shows it (tests/test_cli_defaults.py checks that no command restates one)."""
    return inspect.signature(verb).parameters[name].default


def preset_opt(verb):
    return typer.Option(default(verb, "preset"), "--preset", "-p", help="Scale preset: smoke, micro, mini or paper.")


def data_set_opt(verb):
    return typer.Option(default(verb, "sets"), "--set", "-s", help="Override a generator parameter: --set "
                                                                   "data.num_entities=300 (or num_entities=300).")


def seed_opt(verb):
    return typer.Option(default(verb, "seed"), help="Random seed (default 0).", min=0)
# Every --out is declared readable=False: click checks an existing path's readability with a second system call
# after stat, which a concurrent command replacing that folder (an atomic swap) can fall between, giving a usage
# box instead of one line. The API checks its output folder itself and reports a problem in one line.


# ------------------------------------------------------------------------------------------------ data
@data_app.command("build")
def data_build(
    out: Path = typer.Option(..., "--out", "-o", readable=False, help="Dataset folder to write."),
    preset: str = preset_opt(api.build_data),
    regime: Optional[str] = typer.Option(
        default(api.build_data, "regime"),
        help="Augmentation regime: natural, both_full, both_half, first_full, second_full."),
    aug: Optional[str] = typer.Option(default(api.build_data, "aug"),
                                      help="Custom augmentation: h1ratio=..,h1k=..,h2ratio=..,h2k=.."),
    transfer: bool = typer.Option(default(api.build_data, "transfer"), "--transfer",
                                  help="Write the transfer (fine-tuning) set of the dataset."),
    seed: Optional[int] = seed_opt(api.build_data),
    overrides: Optional[list[str]] = data_set_opt(api.build_data),
    force: bool = typer.Option(default(api.build_data, "force"), "--force", help="Replace an existing dataset folder."),
    task: str = typer.Option(default(api.build_data, "task"), "--task",
                             help="composition (two-hop facts) or comparison (Wang et al.'s "
                                  "attribute comparisons)."),
) -> None:
    """Build one dataset: a pre-training set, or with --transfer its fine-tuning set."""
    t0 = time.perf_counter()
    ds = api.build_data(out=out, preset=preset, regime=regime, aug=aug, sets=overrides, transfer=transfer, seed=seed,
                        force=force, task=task)
    print_dataset_summary(ds, header=f"wrote {out} in {time.perf_counter() - t0:.2f} s")


@data_app.command("family")
def data_family(
    out: Path = typer.Option(..., "--out", "-o", readable=False, help="Folder to hold one dataset folder per regime."),
    preset: str = preset_opt(api.build_family),
    seed: Optional[int] = seed_opt(api.build_family),
    overrides: Optional[list[str]] = data_set_opt(api.build_family),
    transfer: Optional[bool] = typer.Option(
        default(api.build_family, "transfer"), "--transfer/--no-transfer",
        help="Also build each regime's transfer set (default: when the graph has unused (entity, relation) pairs)."),
    force: bool = typer.Option(default(api.build_family, "force"), "--force", help="Replace existing dataset folders."),
) -> None:
    """Build the five regimes of He et al. Fig. 2 (and their transfer sets) on one graph."""
    t0 = time.perf_counter()
    written = api.build_family(out=out, preset=preset, sets=overrides, seed=seed, transfer=transfer, force=force)
    print(f"\nfamily of {len(written)} datasets in {time.perf_counter() - t0:.2f} s")
    print_family_table({name: api.load_data(path) for name, path in written.items()})


@data_app.command("transfer")
def data_transfer(
    parent: Path = typer.Argument(..., help="A pre-training dataset folder."),
    out: Path = typer.Option(..., "--out", "-o", readable=False, help="Transfer dataset folder to write."),
    overrides: Optional[list[str]] = data_set_opt(api.derive_transfer),
    force: bool = typer.Option(default(api.derive_transfer, "force"), "--force",
                               help="Replace an existing dataset folder."),
) -> None:
    """Derive the transfer (fine-tuning) set of an existing pre-training dataset (He et al. §5.1)."""
    tds = api.derive_transfer(parent=parent, out=out, sets=overrides, force=force)
    print_dataset_summary(tds, header=f"wrote {out}")


@data_app.command("show")
def data_show(
    path: Path = typer.Argument(..., help="Dataset folder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (counts, fingerprint, config)."),
) -> None:
    """Print counts per split and probe type."""
    ds = api.load_data(path)
    if as_json:
        print(json.dumps({"name": ds.meta["name"], "task": ds.task, "kind": ds.meta["kind"],
                          "counts": ds.meta["counts"],
                          "fingerprint": ds.meta["fingerprint"], "d_vocab": ds.vocab.d_vocab,
                          "config": ds.meta["config"], "warnings": ds.meta.get("warnings", [])}))
    else:
        print_dataset_summary(ds, header=str(path))


@data_app.command("export")
def data_export(
    path: Path = typer.Argument(..., help="Dataset folder."),
    out: Path = typer.Option(..., "--out", "-o", readable=False, help="Folder for the original-format JSON files."),
    fmt: str = typer.Option(default(api.export_data, "fmt"), "--format", help="Export format (only 'original')."),
    force: bool = typer.Option(default(api.export_data, "force"), "--force", help="Replace an earlier export."),
) -> None:
    """Write train/valid/test/vocab.json in the original authors' item format."""
    written = api.export_data(path=path, out=out, fmt=fmt, force=force)
    names = sorted(p.name for p in Path(written).glob("*.json") if p.name != "grokscope-export.json")
    print(f"exported {path} -> {out} ({', '.join(names)})")


@data_app.command("import")
def data_import(
    folder: Path = typer.Argument(..., help="Folder with train.json, valid.json, test.json, vocab.json."),
    out: Path = typer.Option(..., "--out", "-o", readable=False, help="Dataset folder to write."),
    force: bool = typer.Option(default(api.import_data, "force"), "--force",
                               help="Replace an existing dataset folder."),
) -> None:
    """Read an original-format dataset (bridges recovered from atomic facts) into grokscope's format."""
    print_dataset_summary(api.import_data(folder=folder, out=out, force=force), header=f"imported {folder} -> {out}")


# ------------------------------------------------------------------------------------------------ runs


def device_opt(verb):
    return typer.Option(default(verb, "device"), help="auto (cuda, else mps, else cpu), cpu, cuda or mps.")


def quiet_opt(verb):
    return typer.Option(default(verb, "quiet"), "--quiet", "-q", help="Log lines per evaluation instead of a live bar.")


def spec_only_opt(what: str):
    return typer.Option(None, "--spec-only", readable=False,
                        help=f"Write the {what}'s resolved spec (JSON) to this new file and train nothing: "
                             f"`grokscope stack` trains several in one process.")


@app.command("train")
def train_cmd(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (grokscope data build)."),
    model: str = typer.Option(default(api.train, "model"), "--model", "-m", help="Model family: gpt or trm."),
    preset: str = typer.Option(default(api.train, "preset"), "--preset", "-p",
                               help="Recipe: smoke, micro, mini or paper."),
    overrides: Optional[list[str]] = typer.Option(
        default(api.train, "sets"), "--set", "-s",
        help="Override a setting: --set train.lr=1e-3 --set model.d_model=64 (bare keys: the "
                                  "section that has them)."),
    out: Path = typer.Option(..., "--out", "-o", readable=False, help="Run folder."),
    resume: bool = typer.Option(default(api.train, "resume"), "--resume",
                                help="Continue the run in --out from its last checkpoint."),
    force_config: bool = typer.Option(default(api.train, "force_config"), "--force-config",
                                      help="Allow --resume with a changed config."),
    device: str = device_opt(api.train),
    quiet: bool = quiet_opt(api.train),
    spec_only: Optional[Path] = spec_only_opt("run"),
) -> None:
    """Train a model on a dataset: checkpoints, metrics.jsonl, summary.json with milestones."""
    if spec_only is not None:
        return _write_spec_only(spec_only, {"verb": "train", "kwargs": dict(
            data=data, out=out, model=model, preset=preset, sets=overrides, resume=resume, force_config=force_config,
            device=device, quiet=quiet)})
    summary = api.train(data=data, out=out, model=model, preset=preset, sets=overrides, resume=resume,
                        force_config=force_config, device=device, quiet=quiet)
    ms = ", ".join(f"{k}={v}" for k, v in summary["milestones"].items() if v is not None) or "none reached"
    final = summary["final"]
    keys = ("train_acc", "test_inferred_iid", "test_inferred_ood", f"{summary['bridge_metric']}_ood")
    accs = " ".join(f"{k}={final[k]:.3f}" for k in keys if final.get(k) is not None)
    print(f"done: {out} step {summary['final_step']} ({summary['stop_reason']}), {accs}; milestones: {ms}; "
          f"{summary['wall_seconds']:.0f} s")


@app.command("stack")
def stack_cmd(
    files: list[Path] = typer.Argument(..., help="Run specs (written by `grokscope train ... --spec-only FILE` or "
                                                 "`grokscope transfer ... --spec-only FILE`) or job files a study or "
                                                 "sweep wrote (<out>/jobs/*.json: train, transfer or stack jobs)."),
    backend: str = typer.Option(default(api.stack, "backend"),
                                help="auto (vmap on CUDA, loop on a CPU), loop or vmap."),
) -> None:
    """Train several runs of one architecture stacked in one process (seeds, regimes, grid points, the fine-tunes of
    one model); each run keeps its own folder, data order, optimiser and checkpoints, and can be resumed alone with
    `grokscope train` or `grokscope transfer`."""
    from grokscope.finetuning import print_transfer_summary

    calls = [call for path in files for call in _training_calls(path)]
    for call, summary in zip(calls, api.stack(calls, backend=backend)):
        kwargs = call["kwargs"]
        print(f"done: {kwargs['spec']['out'] if 'spec' in kwargs else kwargs['out']} step {summary['final_step']} "
              f"({summary['stop_reason']})")
        if "transfer" in summary:
            print_transfer_summary(summary)


def _training_calls(path: Path) -> list[dict]:
    """The training calls a stacked file stands for: a run spec is one; a job file its job (a stack job: each
    member). Anything else is one line naming the file."""
    from grokscope import artifacts
    from grokscope.studies import jobs

    data = artifacts.read_json(path, "give a run spec (`grokscope train ... --spec-only FILE`) or a job file")
    if isinstance(data, dict) and "kind" in data:
        if data["kind"] not in ("train", "transfer", "stack"):
            raise GrokscopeError(f"{path}: a {data['kind']} job, not a training job; stack train, transfer or stack "
                                 f"jobs")
        job = jobs.from_dict(data, str(path))
        members = job.members if isinstance(job, jobs.StackJob) else (job,)
        if not all(isinstance(m, (jobs.TrainJob, jobs.TransferJob)) for m in members):
            raise GrokscopeError(f"{path}: a {job.kind} job, not a training job; stack train, transfer or stack jobs")
        return [m.call for m in members]
    if isinstance(data, dict) and {"data", "out", "family"} <= set(data):
        return [{"verb": "train", "kwargs": {"spec": data}}]  # checked as a spec by api.stack
    if isinstance(data, dict) and isinstance(data.get("kwargs"), dict) and data.get("verb") in ("train", "transfer"):
        return [data]  # a job file written before jobs were typed: its call, checked by api.stack
    if isinstance(data, dict) and data.get("verb") == "stack" and isinstance(data.get("kwargs"), dict) and \
            isinstance(data["kwargs"].get("calls"), list):
        return data["kwargs"]["calls"]
    raise GrokscopeError(f"{path}: neither a run spec nor a job file; write a spec with `grokscope train ... "
                         f"--spec-only FILE` (or `transfer ... --spec-only FILE`)")


def _write_spec_only(path: Path, call: dict) -> None:
    """``--spec-only``: the run's resolved spec as JSON in a new file, and nothing trained."""
    from grokscope import artifacts

    if path.exists() or path.is_symlink():
        raise GrokscopeError(f"{path}: exists; --spec-only writes a new file: choose another path or remove it")
    artifacts.write_json_atomic(path, api.run_spec(call).to_dict())
    print(f"wrote the run spec of {call['kwargs']['out']} to {path} (nothing trained); train it with `grokscope "
          f"stack {path} ...`")


@app.command("transfer")
def transfer_cmd(
    parent: str = typer.Option(..., "--from", help="Pre-trained RUN or RUN@STEP (STEP: a number, sat, grokked or "
                                                   "last; default last)."),
    out: Path = typer.Option(..., "--out", "-o", readable=False, help="Fine-tune run folder."),
    data: Optional[Path] = typer.Option(default(api.transfer, "data"), "--data", "-d",
                                        help="Transfer dataset (default: built from the "
                                             "parent's own dataset into OUT/data)."),
    preset: str = typer.Option(default(api.transfer, "preset"), "--preset", "-p",
                               help="Recipe: paper (lr 2e-5, eval every 50 epochs) or "
                                    "scaled (lr parent/2, eval every 250 steps)."),
    overrides: Optional[list[str]] = typer.Option(default(api.transfer, "sets"), "--set", "-s",
                                                  help="Override a train setting."),
    control: bool = typer.Option(default(api.transfer, "control"), "--control",
                                 help="Train the same architecture from scratch on the same "
                                      "data (the control group)."),
    resume: bool = typer.Option(default(api.transfer, "resume"), "--resume", help="Continue an interrupted fine-tune."),
    new_fact_multiple: float = typer.Option(
        default(api.transfer, "new_fact_multiple"), "--new-fact-multiple",
        help="Run at least this many times the steps New Fact accuracy needed to reach 0.99 (0: always run to "
             "max_steps)."),
    flat_evals: int = typer.Option(default(api.transfer, "flat_evals"), "--flat-evals",
                                   help="... and until new+old has not "
                                        "moved for this many evaluations; max_steps caps it."),
    flat_tolerance: float = typer.Option(default(api.transfer, "flat_tolerance"), "--flat-tolerance",
                                         help="'Not moved': max - min at most this."),
    draw: str = typer.Option(default(api.transfer, "draw"), "--draw",
                             help="How the derived transfer set draws new facts' tails: uniform "
                                  "(the authors') or kept (among the kept old facts' heads: "
                                  "He et al.'s new+old category at a usable n)."),
    device: str = device_opt(api.transfer),
    quiet: bool = quiet_opt(api.transfer),
    spec_only: Optional[Path] = spec_only_opt("fine-tune"),
) -> None:
    """Fine-tune a checkpoint on new facts (or train the control) and measure transfer per category."""
    from grokscope.finetuning import print_transfer_summary

    kwargs = dict(parent=parent, out=out, data=data, preset=preset, sets=overrides, control=control, device=device,
                  quiet=quiet, resume=resume, new_fact_multiple=new_fact_multiple, flat_evals=flat_evals,
                  flat_tolerance=flat_tolerance, draw=draw)
    if spec_only is not None:
        return _write_spec_only(spec_only, {"verb": "transfer", "kwargs": kwargs})
    summary = api.transfer(**kwargs)
    print(f"done: {out} step {summary['final_step']} ({summary['stop_reason']})")
    print_transfer_summary(summary)


@app.command("analyze")
def analyze_cmd(
    run: Path = typer.Argument(..., help="Run folder."),
    steps: str = typer.Option(default(api.analyze, "steps"),
                              help="all, last, sat (first checkpoint at training saturation), "
                                   "grokked (first at ID test >= 0.9) or STEP,STEP,..."),
    probes: str = typer.Option(default(api.analyze, "probes"),
                               help="Probe types: ood, iid, train, new, mix, mix_powered or "
                                    "full names."),
    analyses: str = typer.Option(default(api.analyze, "analyses"),
                                 help="Any of lens, trace, queries (per-query records and bridge use), compare, "
                                      "regime."),
    data: Optional[Path] = typer.Option(default(api.analyze, "data"),
                                        help="Dataset folder if it moved since training."),
    device: str = device_opt(api.analyze),
) -> None:
    """Logit lens, causal tracing, bridge use, path comparison and regime classification -> RUN/analysis/."""
    result = api.analyze(run=run, steps=steps, probes=probes, analyses=analyses, data=data, device=device)
    for key, rates in result.get("lens", {}).items():
        use = result.get("bridge_use", {}).get(key)
        print(f"lens {key}: bridge_found {rates['bridge_found']:.3f}, target_found {rates['target_found']:.3f}"
              + (f", bridge_use {use:.3f}" if use is not None else ""))
    for name, c in result.get("compare", {}).items():
        print(f"compare {name} (step {c['step_a']} vs {c['step_b']}, {c['n_queries']} ID compositions): "
              f"{c['verdict']} ({c['why']})")
    for kind, r in result.get("regime", {}).items():
        print(f"regime ({kind}): {r['regime']} (t_sat {r['t_sat']}, t_gen {r['t_gen']}, bridge when high "
              f"{_fmt(r['bridge_when_high'])})")
    print(f"tables in {Path(run) / 'analysis'}")


@app.command("compare")
def compare_cmd(
    a: str = typer.Argument(..., help="RUN@STEP of the first checkpoint."),
    b: str = typer.Argument(..., help="RUN@STEP of the second checkpoint."),
    probes: str = typer.Option(default(api.compare, "probes"),
                               help="Composition probes to compare on (from A's dataset)."),
    out: Optional[Path] = typer.Option(default(api.compare, "out"), help="Write the comparison as JSON here."),
    device: str = device_opt(api.compare),
) -> None:
    """Do two checkpoints (e.g. of two regimes) use the same inference path?"""
    c = api.compare(a=a, b=b, probes=probes, out=out, device=device)
    print(f"{c['a']} vs {c['b']} on {c['n_queries']} compositions: bridge levels {_fmt(c['level_a'])} / "
          f"{_fmt(c['level_b'])}, profile r {_fmt(c['profile_corr'])} -> {c['verdict']} ({c['why']})")


@export_app.command("tl")
def export_tl_cmd(
    ref: str = typer.Argument(..., help="RUN or RUN@STEP (default: the last checkpoint)."),
    out: Optional[Path] = typer.Option(default(api.export_tl, "out"), "--out", "-o", readable=False,
                                       help="Folder (default RUN/export_tl_step_<STEP>)."),
    force: bool = typer.Option(default(api.export_tl, "force"), "--force", help="Replace an earlier export in --out."),
    check: bool = typer.Option(default(api.export_tl, "check"), "--check/--no-check",
                               help="With transformer-lens installed, build the TL model and compare logits."),
) -> None:
    """Write a gpt checkpoint in TransformerLens's layout (tl_model.safetensors + tl_config.json)."""
    path, diff = api.export_tl(ref=ref, out=out, force=force, check=check)
    print(f"exported {ref} -> {path}" + (f"; TransformerLens logits agree to {diff:.1e}" if diff is not None else ""))


# ------------------------------------------------------------------------------------------------ studies
@app.command("study")
def study_cmd(
    preset: str = typer.Option(default(api.study, "preset"), "--preset", "-p",
                               help="smoke, micro, mini, paper, or a YAML file."),
    out: Optional[Path] = typer.Option(default(api.study, "out"), "--out", "-o", readable=False,
                                       help="Study folder (default reports/<preset>)."),
    executor: str = typer.Option(default(api.study, "executor"),
                                 help="local (in-process on a CPU, one job per GPU) or ray."),
    address: Optional[str] = typer.Option(default(api.study, "address"),
                                          help="Ray cluster address (default: a local Ray instance)."),
    overrides: Optional[list[str]] = typer.Option(default(api.study, "sets"), "--set", "-s",
                                                  help="data.KEY=V, train.KEY=V, model.KEY=V or transfer.KEY=V."),
    fresh: bool = typer.Option(default(api.study, "fresh"), "--fresh",
                               help="Start over, discarding the study in --out."),
    stack: bool = typer.Option(default(api.study, "stack"), "--stack/--no-stack",
                               help="Train runs of one architecture stacked in one "
                                    "process (grokscope stack)."),
    plan_only: bool = typer.Option(False, "--plan", help="Print every job with its steps, parameters, training "
                                                         "FLOPs and estimated time here; run and write nothing."),
) -> None:
    """Run a whole study (data, training, analyses, transfer) and write the report; resumes by default."""
    if plan_only:
        return _print_plan(api.plan_study(preset=preset, out=out, sets=overrides))
    t0 = time.perf_counter()
    report = api.study(preset=preset, out=out, executor=executor, address=address, sets=overrides, fresh=fresh,
                       stack=stack)
    print(f"study done in {(time.perf_counter() - t0) / 60:.1f} min: {report} (and {report.with_suffix('.md')})")


@app.command("sweep")
def sweep_cmd(
    grid: list[str] = typer.Option(..., "--grid", "-g", help="data.KEY=v1,v2 / train.KEY=v1,v2 / model.KEY=v1,v2;"
                                                             " repeat for a product grid."),
    preset: str = typer.Option(default(api.sweep, "preset"), "--preset", "-p",
                               help="Study preset whose data and model to use."),
    model: Optional[str] = typer.Option(default(api.sweep, "model"), "--model", "-m",
                                        help="Which model of the preset (default: the "
                                             "first)."),
    out: Optional[Path] = typer.Option(default(api.sweep, "out"), "--out", "-o", readable=False,
                                       help="Sweep folder (default reports/sweep_<preset>)."),
    executor: str = typer.Option(default(api.sweep, "executor"), help="local or ray."),
    address: Optional[str] = typer.Option(default(api.sweep, "address"), help="Ray cluster address."),
    stack: bool = typer.Option(default(api.sweep, "stack"), "--stack/--no-stack",
                               help="Train grid points that share an architecture "
                                    "stacked in one process."),
    fresh: bool = typer.Option(default(api.sweep, "fresh"), "--fresh",
                               help="Start over, discarding the sweep in --out."),
    plan_only: bool = typer.Option(False, "--plan", help="Print every grid point with its steps, parameters, "
                                                         "training FLOPs and estimated time here; run nothing."),
    task: str = typer.Option(default(api.sweep, "task"), "--task", help="composition (the preset's natural regime) or "
                                                            "comparison (the preset's comparison section, Wang et "
                                                            "al.'s comparison task)."),
) -> None:
    """Train over a grid of config values and write a milestone table (CSV) and figures."""
    if plan_only:
        return _print_plan(api.plan_sweep(grid=grid, preset=preset, out=out, model=model, task=task))
    csv = api.sweep(grid=grid, preset=preset, out=out, executor=executor, address=address, model=model,
                    stack=stack, fresh=fresh, task=task)
    print(csv.read_text())
    print(f"wrote {csv} and {csv.with_name('sweep.png')}")


def _print_plan(rows: list[dict]) -> None:
    from grokscope.studies.estimate import print_table

    print_table(rows)
    print("nothing was run or written; drop --plan to run it")


@app.command("report")
def report_cmd(study: Path = typer.Argument(..., help="A study folder (grokscope study --out)."),
               readme: Optional[Path] = typer.Option(
                   default(api.report, "readme"), readable=False,
                   help="Also write the measured tables (findings, runs, fine-tunes) into this README, between its "
                        "'<!-- grokscope measured: begin -->' and '<!-- grokscope measured: end -->' lines.")) -> None:
    """Rebuild a study's report from its run folders (reads files only)."""
    print(f"wrote {api.report(path=study, readme=readme)}" + (f" and the measured section of {readme}" if readme
                                                                else ""))


# ------------------------------------------------------------------------------------------------ printing
def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


# ------------------------------------------------------------------------------------------------ entry points
def _click_exceptions():
    try:
        from typer._click import exceptions  # typer >= 0.20 vendors its own click
    except ImportError:  # pragma: no cover - older typer uses the click package
        from click import exceptions
    return exceptions


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one line each and exit code 2; usage errors print typer's
    usage message and exit 2; Ctrl-C exits 130, also when it lands while another outcome is being reported."""
    try:
        _main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def _main(argv: list[str] | None) -> None:
    exc_types = _click_exceptions()
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = app(args=args, standalone_mode=False, prog_name="grokscope")
    except exc_types.NoArgsIsHelpError:  # a bare `grokscope` (or command group): typer printed the help
        sys.exit(2)
    except exc_types.ClickException as exc:  # unknown command / option, bad value type, missing argument
        try:
            from typer import rich_utils

            rich_utils.rich_format_error(exc)
        except ImportError:  # pragma: no cover - older typer uses the click package
            exc.show()
        sys.exit(exc.exit_code)
    except typer.Abort:
        code = 130
    except errors.REPORTED as exc:  # one line each, never a traceback
        sys.exit(errors.report(exc))
    if code == 130:
        print("interrupted", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
