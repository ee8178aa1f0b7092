"""The ``grokscope`` command line: one entry point, verbs mapped onto typed functions.

Every user error is printed as ``error: <problem and fix>`` (one line per problem) with exit code 2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from grokscope.errors import GrokscopeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Grokking and generalization circuits in transformers on two-hop reasoning.")
data_app = typer.Typer(no_args_is_help=True, help="Build, inspect, export and import datasets (PAPER_SPEC §2).")
app.add_typer(data_app, name="data")


def _parse_aug(aug: Optional[str]) -> dict[str, str]:
    from grokscope.config import parse_overrides

    return parse_overrides([aug]) if aug else {}


def _data_config(preset: str, regime: Optional[str], aug: Optional[str], overrides: Optional[list[str]]):
    from grokscope.config import parse_overrides
    from grokscope.data.config import resolve_data_config

    return resolve_data_config(preset, regime, _parse_aug(aug), parse_overrides(overrides))


PresetOpt = typer.Option("micro", "--preset", "-p", help="Scale preset: smoke, micro, mini or paper.")
SetOpt = typer.Option(None, "--set", "-s", help="Override any generator parameter: --set num_entities=300.")


@data_app.command("build")
def data_build(
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to write."),
    preset: str = PresetOpt,
    regime: Optional[str] = typer.Option(
        None, help="Augmentation regime: natural, both_full, both_half, first_full, second_full."),
    aug: Optional[str] = typer.Option(None, help="Custom augmentation: h1ratio=..,h1k=..,h2ratio=..,h2k=.."),
    transfer: bool = typer.Option(False, "--transfer", help="Write the transfer (fine-tuning) set of the dataset."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default 0)."),
    overrides: Optional[list[str]] = SetOpt,
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
) -> None:
    """Build one dataset: a pre-training set, or with --transfer its fine-tuning set."""
    from grokscope.data.build import build_dataset
    from grokscope.data.store import check_output_dir, save
    from grokscope.data.transfer import build_transfer

    overrides = list(overrides or []) + ([f"seed={seed}"] if seed is not None else [])
    cfg = _data_config(preset, regime, aug, overrides).validate(transfer=transfer)
    check_output_dir(out, force)
    t0 = time.perf_counter()
    ds = build_dataset(cfg)
    if transfer:
        ds = build_transfer(ds, cfg)
    save(ds, out, force=force)
    _print_summary(ds, header=f"wrote {out} in {time.perf_counter() - t0:.2f} s")


@data_app.command("family")
def data_family(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to hold one dataset folder per regime."),
    preset: str = PresetOpt,
    seed: Optional[int] = typer.Option(None, help="Random seed (default 0)."),
    overrides: Optional[list[str]] = SetOpt,
    transfer: Optional[bool] = typer.Option(
        None, "--transfer/--no-transfer",
        help="Also build each regime's transfer set (default: when the graph has unused (entity, relation) pairs)."),
    force: bool = typer.Option(False, "--force", help="Replace existing dataset folders."),
) -> None:
    """Build the five regimes of He et al. Fig. 2 (and their transfer sets) on one graph."""
    from grokscope.data.build import build_family
    from grokscope.data.store import load

    overrides = list(overrides or []) + ([f"seed={seed}"] if seed is not None else [])
    cfg = _data_config(preset, None, None, overrides)
    problems = cfg.problems(transfer=bool(transfer))
    if problems:
        raise GrokscopeError(problems + (["or build without transfer sets: --no-transfer"] if transfer else []))
    if transfer is None:
        transfer_problems = cfg.problems(transfer=True)
        transfer = not transfer_problems
        for problem in transfer_problems:
            print(f"note: transfer sets skipped: {problem}")
    t0 = time.perf_counter()
    written = build_family(cfg, out, force=force, transfer=transfer)
    print(f"\nfamily of {len(written)} datasets in {time.perf_counter() - t0:.2f} s")
    _print_family_table({name: load(path) for name, path in written.items()})


@data_app.command("transfer")
def data_transfer(
    parent: Path = typer.Argument(..., help="A pre-training dataset folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Transfer dataset folder to write."),
    overrides: Optional[list[str]] = SetOpt,
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
) -> None:
    """Derive the transfer (fine-tuning) set of an existing pre-training dataset (PAPER_SPEC §2.4)."""
    from grokscope.config import apply_overrides, from_dict, parse_overrides
    from grokscope.data.config import DataConfig
    from grokscope.data.store import check_output_dir, load, save
    from grokscope.data.transfer import build_transfer

    ds = load(parent)
    base = from_dict(DataConfig, {**ds.meta["config"]}, what="dataset config") if ds.meta.get("seed") is not None \
        else DataConfig(num_entities=ds.vocab.num_entities, num_relations=ds.vocab.num_relations,
                        out_degree=ds.meta["config"]["out_degree"], phi=0.0)
    cfg = apply_overrides(base, parse_overrides(overrides), what="data")
    check_output_dir(out, force)
    tds = build_transfer(ds, cfg)
    save(tds, out, force=force)
    _print_summary(tds, header=f"wrote {out}")


@data_app.command("show")
def data_show(
    path: Path = typer.Argument(..., help="Dataset folder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (counts, fingerprint, config)."),
) -> None:
    """Print counts per split and probe type."""
    from grokscope.data.store import load

    ds = load(path)
    if as_json:
        print(json.dumps({"name": ds.meta["name"], "kind": ds.meta["kind"], "counts": ds.meta["counts"],
                          "fingerprint": ds.meta["fingerprint"], "d_vocab": ds.vocab.d_vocab,
                          "config": ds.meta["config"], "warnings": ds.meta.get("warnings", [])}))
    else:
        _print_summary(ds, header=str(path))


@data_app.command("export")
def data_export(
    path: Path = typer.Argument(..., help="Dataset folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the original-format JSON files."),
    fmt: str = typer.Option("original", "--format", help="Export format (only 'original')."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
) -> None:
    """Write train/valid/test/vocab.json in the original authors' item format."""
    from grokscope.data.original_format import export_original
    from grokscope.data.store import load

    if fmt != "original":
        raise GrokscopeError(f"unknown export format {fmt!r}; the only format is 'original'")
    export_original(load(path), out, force=force)
    print(f"exported {path} -> {out} (train.json, valid.json, test.json, vocab.json, id_facts.json, "
          f"ood_facts.json)")


@data_app.command("import")
def data_import(
    folder: Path = typer.Argument(..., help="Folder with train.json, valid.json, test.json, vocab.json."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to write."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
) -> None:
    """Read an original-format dataset (bridges recovered from atomic facts) into grokscope's format."""
    from grokscope.data.original_format import import_original
    from grokscope.data.store import check_output_dir, save

    check_output_dir(out, force)
    ds = import_original(folder)
    save(ds, out, force=force)
    _print_summary(ds, header=f"imported {folder} -> {out}")


def split_overrides(family: str, overrides: dict[str, str]) -> tuple[dict, dict]:
    """``--set`` keys go to the train config, ``model.KEY`` (or a key only the model has) to the model config."""
    import dataclasses

    from grokscope.models.registry import FAMILIES
    from grokscope.train.config import TrainConfig

    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    model_keys = {f.name for f in dataclasses.fields(FAMILIES[family][0])} if family in FAMILIES else set()
    train, model, problems = {}, {}, []
    for key, value in overrides.items():
        if key.startswith("model."):
            model[key[6:]] = value
        elif key in train_keys:
            train[key] = value
        elif key in model_keys:
            model[key] = value
        else:
            problems.append(f"unknown --set key {key!r}: not a train or {family} model setting (train keys: "
                            f"{', '.join(sorted(train_keys))}; model keys: {', '.join(sorted(model_keys))})")
    if problems:
        raise GrokscopeError(problems)
    return train, model


def resolve_run_configs(family: str, preset: str, overrides: Optional[list[str]], d_vocab: int):
    from grokscope.config import parse_overrides
    from grokscope.models.registry import FAMILIES, model_config
    from grokscope.train.config import resolve_train_config

    if family not in FAMILIES:
        raise GrokscopeError(f"unknown model family {family!r}; choose gpt or trm")
    train_over, model_over = split_overrides(family, parse_overrides(overrides))
    train_cfg = resolve_train_config(family, preset, train_over)
    if family == "trm" and "forward_dtype" not in model_over:  # the TRM casts itself (§3.3)
        model_over["forward_dtype"] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[
            train_cfg.precision]
    model_cfg = model_config(family, train_cfg.model_config, d_vocab=d_vocab, overrides=model_over)
    return train_cfg, model_cfg


@app.command("train")
def train_cmd(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (grokscope data build)."),
    model: str = typer.Option("gpt", "--model", "-m", help="Model family: gpt or trm."),
    preset: str = typer.Option("micro", "--preset", "-p", help="Recipe: smoke, micro, mini or paper."),
    overrides: Optional[list[str]] = typer.Option(
        None, "--set", "-s", help="Override a train or model setting: --set lr=1e-3 --set model.d_model=64."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    force_config: bool = typer.Option(False, "--force-config", help="Allow --resume with a changed config."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Log lines per evaluation instead of a live bar."),
) -> None:
    """Train a model on a dataset: checkpoints, metrics.jsonl, summary.json with milestones."""
    from grokscope.data.store import load
    from grokscope.train.loop import train

    ds = load(data)
    train_cfg, model_cfg = resolve_run_configs(model, preset, overrides, ds.vocab.d_vocab)
    summary = train(ds, data, model, model_cfg, train_cfg, out, resume=resume, force_config=force_config,
                    device=device, quiet=quiet)
    ms = ", ".join(f"{k}={v}" for k, v in summary["milestones"].items() if v is not None) or "none reached"
    final = summary["final"]
    accs = " ".join(f"{k}={final[k]:.3f}" for k in ("train_acc", "test_inferred_iid", "test_inferred_ood",
                                                     "bridge_found_ood") if final.get(k) is not None)
    print(f"done: {out} step {summary['final_step']} ({summary['stop_reason']}), {accs}; milestones: {ms}; "
          f"{summary['wall_seconds']:.0f} s")


export_app = typer.Typer(no_args_is_help=True, help="Export trained models to other tools.")
app.add_typer(export_app, name="export")


def parse_run_ref(ref: str) -> tuple[Path, Optional[str]]:
    """'runs/x@1200' -> (runs/x, '1200'); 'runs/x' -> (runs/x, None) meaning the last checkpoint."""
    if "@" in ref:
        run, step = ref.rsplit("@", 1)
        return Path(run), step
    return Path(ref), None


@export_app.command("tl")
def export_tl_cmd(
    ref: str = typer.Argument(..., help="RUN or RUN@STEP (default: the last checkpoint)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder (default RUN/export_tl_step_<STEP>)."),
    check: bool = typer.Option(True, "--check/--no-check",
                               help="With transformer-lens installed, build the TL model and compare logits."),
) -> None:
    """Write a gpt checkpoint in TransformerLens's layout (tl_model.safetensors + tl_config.json)."""
    import torch
    from safetensors.torch import save_file

    from grokscope.models.export_tl import tl_config, tl_state_dict, to_transformer_lens
    from grokscope.runs import load_model

    run, step = parse_run_ref(ref)
    model, step = load_model(run, step)
    if model.family != "gpt":
        raise GrokscopeError(f"{run} is a {model.family} run; only gpt models export to TransformerLens")
    out = out or run / f"export_tl_step_{step:08d}"
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tl_state_dict(model).items()}, out / "tl_model.safetensors")
    (out / "tl_config.json").write_text(json.dumps(tl_config(model), indent=2))
    msg = f"exported {run}@{step} -> {out}"
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
            msg += f"; TransformerLens logits agree to {diff:.1e}"
    print(msg)


@app.command("transfer")
def transfer_cmd(
    parent: str = typer.Option(..., "--from", help="Pre-trained RUN or RUN@STEP (default: its last checkpoint)."),
    out: Path = typer.Option(..., "--out", "-o", help="Fine-tune run folder."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Transfer dataset (default: built from the "
                                                                   "parent's own dataset into OUT/data)."),
    preset: str = typer.Option("scaled", "--preset", "-p", help="Recipe: paper (lr 2e-5, eval every 50 epochs) or "
                                                                "scaled (lr parent/2, eval every 250 steps)."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", "-s", help="Override a train setting."),
    control: bool = typer.Option(False, "--control", help="Train the same architecture from scratch on the same "
                                                          "data (the control group)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted fine-tune."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Log lines per evaluation instead of a live bar."),
) -> None:
    """Fine-tune a checkpoint on new facts (or train the control) and measure transfer per category."""
    from grokscope.config import parse_overrides
    from grokscope.transfer import print_transfer_summary, run_transfer

    summary = run_transfer(parse_run_ref(parent), out, data=data, preset=preset,
                           overrides=parse_overrides(overrides), control=control, device=device, quiet=quiet,
                           resume=resume)
    print(f"done: {out} step {summary['final_step']} ({summary['stop_reason']})")
    print_transfer_summary(summary)


@app.command("study")
def study_cmd(
    preset: str = typer.Option("micro", "--preset", "-p", help="smoke, micro, mini, paper, or a YAML file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Study folder (default reports/<preset>)."),
    executor: str = typer.Option("local", help="local (one job at a time on CPU, one per GPU) or ray."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (default: a local Ray instance)."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", "-s",
                                                  help="data.KEY=V, train.KEY=V or transfer.KEY=V."),
    fresh: bool = typer.Option(False, "--fresh", help="Start over instead of resuming the study in --out."),
) -> None:
    """Run a whole study (data, training, analyses, transfer) and write the report; resumes by default."""
    from grokscope.config import parse_overrides
    from grokscope.study import run_study

    out = out or Path("reports") / Path(preset).stem
    t0 = time.perf_counter()
    report = run_study(preset, out, executor=executor, address=address, overrides=parse_overrides(overrides),
                       fresh=fresh)
    print(f"study done in {(time.perf_counter() - t0) / 60:.1f} min: {report} (and {report.with_suffix('.md')})")


@app.command("sweep")
def sweep_cmd(
    grid: list[str] = typer.Option(..., "--grid", "-g", help="data.KEY=v1,v2 / train.KEY=v1,v2 / model.KEY=v1,v2;"
                                                             " repeat for a product grid."),
    preset: str = typer.Option("micro", "--preset", "-p", help="Study preset whose data and first model to use."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Sweep folder (default reports/sweep_<preset>)."),
    executor: str = typer.Option("local", help="local or ray."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address."),
) -> None:
    """Train over a grid of config values and write a milestone table (CSV) and figure."""
    from grokscope.sweep import run_sweep

    csv = run_sweep(preset, grid, out or Path("reports") / f"sweep_{Path(preset).stem}", executor, address)
    print(open(csv).read())
    print(f"wrote {csv} and {csv.with_name('sweep.png')}")


@app.command("report")
def report_cmd(study: Path = typer.Argument(..., help="A study folder (grokscope study --out).")) -> None:
    """Rebuild a study's report from its run folders (reads files only)."""
    from grokscope.report.build import build_report

    if not (study / "study.json").is_file():
        raise GrokscopeError(f"{study} is not a study folder (no study.json); run `grokscope study` first")
    print(f"wrote {build_report(study)}")


@app.command("analyze")
def analyze_cmd(
    run: Path = typer.Argument(..., help="Run folder."),
    steps: str = typer.Option("sat,last", help="all, last, sat (first checkpoint at training saturation) or "
                                               "STEP,STEP,..."),
    probes: str = typer.Option("ood,iid,train", help="Probe types: ood, iid, train, new, mix, mix_powered or "
                                                     "full names."),
    analyses: str = typer.Option("lens,trace,compare,regime", help="Any of lens, trace, compare, regime."),
    data: Optional[Path] = typer.Option(None, help="Dataset folder if it moved since training."),
) -> None:
    """Logit lens, causal tracing, path comparison and regime classification -> RUN/analysis/."""
    from grokscope.analysis.run_analysis import analyze

    result = analyze(run, steps, probes, analyses, data)
    for key, rates in result.get("lens", {}).items():
        print(f"lens {key}: bridge_found {rates['bridge_found']:.3f}, target_found {rates['target_found']:.3f}")
    if "compare" in result and "skipped" not in result["compare"]:
        c = result["compare"]
        print(f"compare step {c['step_a']} vs {c['step_b']} on {c['n_queries']} ID compositions: causal-map r "
              f"{_fmt(c['causal_map_corr'])}, bridge-profile r {_fmt(c['bridge_profile_corr'])}, same first stage "
              f"{c['same_first_stage']:.2f} -> {c['verdict']} (threshold r >= {c['threshold']})")
    for kind, r in result.get("regime", {}).items():
        print(f"regime ({kind}): {r['regime']} (t_sat {r['t_sat']}, t_gen {r['t_gen']}, bridge when high "
              f"{r['bridge_when_high']})")
    print(f"tables in {run / 'analysis'}")


@app.command("compare")
def compare_cmd(
    a: str = typer.Argument(..., help="RUN@STEP of the first checkpoint."),
    b: str = typer.Argument(..., help="RUN@STEP of the second checkpoint."),
    probes: str = typer.Option("iid,train", help="Composition probes to compare on (from A's dataset)."),
    threshold: float = typer.Option(0.8, help="Correlation needed for 'same path'."),
    out: Optional[Path] = typer.Option(None, help="Write the comparison as JSON here."),
) -> None:
    """Do two checkpoints (e.g. two regimes) use the same inference path on the same compositions?"""
    import numpy as np

    from grokscope.analysis.circuits import compare_paths
    from grokscope.analysis.run_analysis import TRACE_EXAMPLES, _sample_rows, resolve_probes, run_dataset
    from grokscope.runs import load_model, write_json_atomic
    from grokscope.train.batches import encode

    (run_a, step_a), (run_b, step_b) = parse_run_ref(a), parse_run_ref(b)
    ds = run_dataset(run_a)
    model_a, step_a = load_model(run_a, step_a)
    model_b, step_b = load_model(run_b, step_b)
    if model_a.cfg.d_vocab != model_b.cfg.d_vocab:
        raise GrokscopeError("the two runs have different vocabularies; compare runs trained on the same graph")
    rows = _sample_rows(np.concatenate([ds.probe(t) for t in resolve_probes(ds, probes)]), TRACE_EXAMPLES)
    cmp = compare_paths(model_a, model_b, encode(ds, rows), ds, rows, threshold=threshold)
    result = {"a": f"{run_a}@{step_a}", "b": f"{run_b}@{step_b}", **cmp.to_dict()}
    if out:
        write_json_atomic(out, result)
    print(f"{result['a']} vs {result['b']} on {cmp.n_queries} compositions: causal-map r {_fmt(cmp.causal_map_corr)},"
          f" bridge-profile r {_fmt(cmp.bridge_profile_corr)}, same first stage {cmp.same_first_stage:.2f} -> "
          f"{cmp.verdict} (threshold r >= {threshold})")


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _print_summary(ds, header: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{header}\n{ds.meta['name']} ({ds.meta['kind']}), fingerprint {ds.meta['fingerprint']}, "
                        f"d_vocab {ds.vocab.d_vocab}", title_justify="left")
    table.add_column("split / probe type")
    table.add_column("items", justify="right")
    for name, n in ds.meta["counts"].items():
        table.add_row(name, f"{n:,}")
    console = Console(width=max(100, Console().width))
    console.print(table)
    for w in ds.meta.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {w}")


def _print_family_table(datasets: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    columns = {"train_atomic": "atomic", "train_inferred": "inferred", "train_inferred/aug_hop1": "+hop1",
               "train_inferred/aug_hop2": "+hop2", "valid": "ood_test", "probe/test_inferred_iid": "iid_probe",
               "probe/atomic_new": "new", "probe/test_inferred_new": "new+new",
               "probe/test_inferred_new_mix": "mix", "probe/test_inferred_new_mix_powered": "mix_pow"}
    present = [k for k in columns if any(k in ds.meta["counts"] for ds in datasets.values())]
    table = Table(title="dataset family (items)", title_justify="left")
    table.add_column("dataset", no_wrap=True)
    for k in present:
        table.add_column(columns[k], justify="right")
    for name, ds in datasets.items():
        c = ds.meta["counts"]
        table.add_row(name, *[f"{c[k]:,}" if k in c else "-" for k in present])
    Console(width=max(100, Console().width)).print(table)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one line each and exit code 2."""
    try:
        # Outside standalone mode click returns the exit code of typer.Exit / Ctrl-C (130) instead of exiting.
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and code != 0:
            if code == 130:
                print("interrupted", file=sys.stderr)
            sys.exit(code)
    except GrokscopeError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # click usage errors (unknown option, missing argument)
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
