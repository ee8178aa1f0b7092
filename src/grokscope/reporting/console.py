"""Tables printed on the terminal by ``grokscope data``: a dataset's splits and probe types with their sizes, and
a regime family side by side (rich tables, as wide as the terminal allows)."""

from __future__ import annotations


def print_dataset_summary(ds, header: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{header}\n{ds.meta['name']} ({ds.task} task, {ds.meta['kind']}), fingerprint "
                        f"{ds.meta['fingerprint']}, d_vocab {ds.vocab.d_vocab}", title_justify="left")
    table.add_column("split / probe type")
    table.add_column("items", justify="right")
    for name, n in ds.meta["counts"].items():
        table.add_row(name, f"{n:,}")
    console = Console(width=max(100, Console().width))
    console.print(table)
    for w in ds.meta.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {w}")


def print_family_table(datasets: dict) -> None:
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
