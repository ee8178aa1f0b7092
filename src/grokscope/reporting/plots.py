"""Pure plotting functions: tables in, matplotlib Figures out (no I/O, no training imports)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

COLORS = {"bridge": "#1f77b4", "ood": "#d62728", "train": "#2ca02c", "iid": "#9467bd", "new": "#ff7f0e",
          "comp": "#2ca02c"}


def _curve(ax, df, col, label, color, marker=None, style="-"):
    if col in df and df[col].notna().any():
        ax.plot(df["step"], df[col], style, color=color, marker=marker, markersize=3, label=label)


BRIDGE_LABELS = {"bridge_use": "bridge use (OOD)", "bridge_found": "bridge found (OOD)"}


def regime_panels(curves: dict[str, pd.DataFrame], title: str, bridge_metric: str = "bridge_found"):
    """He et al. Fig. 2 analogue: per regime, the bridge measure, OOD accuracy (exact match and target found) and
    training accuracy."""
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.0), squeeze=False, sharey=True)
    for ax, (name, df) in zip(axes[0], curves.items()):
        _curve(ax, df, f"{bridge_metric}_ood", BRIDGE_LABELS.get(bridge_metric, bridge_metric), COLORS["bridge"],
               "o")
        _curve(ax, df, "target_found_ood", "OOD target found", COLORS["ood"], "s")
        _curve(ax, df, "test_inferred_ood", "OOD exact match", COLORS["ood"], None, "--")
        _curve(ax, df, "train_acc", "training accuracy", COLORS["train"], "^")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(-0.02, 1.05)
    axes[0][0].set_ylabel("rate")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def grokking_curve(df: pd.DataFrame, title: str):
    """Wang et al. Fig. 1 analogue: training, ID test and OOD test accuracy vs step."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    _curve(ax, df, "train_acc", "training", COLORS["train"])
    _curve(ax, df, "test_inferred_iid", "ID test", COLORS["iid"])
    _curve(ax, df, "test_inferred_ood", "OOD test", COLORS["ood"])
    ax.set_xlabel("step")
    ax.set_ylabel("exact match")
    ax.set_ylim(-0.02, 1.05)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def transfer_grid(runs: dict[str, pd.DataFrame], categories: list[tuple[str, str]], title: str,
                  bridge_metric: str = "bridge_found"):
    """He et al. Fig. 3/4 analogue: rows = starting models, columns = categories; New Fact accuracy, composition
    exact match and the bridge measure vs fine-tuning step."""
    fig, axes = plt.subplots(len(runs), len(categories), figsize=(3.2 * len(categories), 2.2 * len(runs)),
                             squeeze=False, sharex=True, sharey=True)
    for r, (name, df) in enumerate(runs.items()):
        for c, (cat, label) in enumerate(categories):
            ax = axes[r][c]
            _curve(ax, df, f"{bridge_metric}_{cat}", bridge_metric.replace("_", " "), COLORS["bridge"], "o")
            _curve(ax, df, cat, "composition exact match", COLORS["comp"], "s")
            _curve(ax, df, f"{cat}_retained", "exact match, old hop kept", COLORS["comp"], None, "--")
            _curve(ax, df, "atomic_new", "New Fact acc", COLORS["new"], "^")
            ax.set_ylim(-0.02, 1.05)
            if r == 0:
                ax.set_title(label, fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    axes[-1][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def lens_profiles(profiles: dict[str, pd.Series], title: str, ylabel: str):
    """Bridge decodability per layer / stage for several checkpoints (e.g. saturated vs grokked)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for label, series in profiles.items():
        ax.plot(range(len(series)), series.values, marker="o", label=label)
        ax.set_xticks(range(len(series)), series.index, rotation=60 if len(series) > 6 else 0, fontsize=7)
    ax.set_ylim(-0.02, 1.05)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def causal_heatmaps(maps: dict[str, pd.DataFrame], title: str):
    """Causal strength (stage x position) per checkpoint and the difference last - first (Wang et al.'s style)."""
    names = list(maps)
    panels = [(n, maps[n], "viridis", (0, 1)) for n in names]
    if len(names) >= 2:
        diff = maps[names[-1]] - maps[names[0]]
        panels.append((f"{names[-1]} - {names[0]}", diff, "PiYG", (-1, 1)))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 0.28 * max(len(m) for m in maps.values())
                                                        + 1.6), squeeze=False)
    for ax, (name, m, cmap, (lo, hi)) in zip(axes[0], panels):
        im = ax.imshow(m.values, cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
        ax.set_xticks(range(m.shape[1]), m.columns)
        ax.set_yticks(range(m.shape[0]), m.index, fontsize=7)
        ax.set_title(name, fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.05)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def milestone_sweep(df: pd.DataFrame, x: str, title: str, by: list[str] | None = None):
    """Steps to each milestone vs a swept config value (Wang et al. Fig. 2 style): one line per milestone and per
    combination of the other grid keys ``by`` (so points that differ in another key are never joined)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    reached = [c for c in df.columns if c.startswith("t_") and df[c].notna().any()]
    groups = list(df.groupby(by, sort=False)) if by else [((), df)]
    markers = "osd^v<>"
    for i, col in enumerate(reached):
        for key, sub in groups:
            key = key if isinstance(key, tuple) else (key,)
            label = col + "".join(f", {k.split('.', 1)[-1]}={v}" for k, v in zip(by or [], key))
            sub = sub.sort_values(x)
            ax.plot(sub[x], sub[col], marker=markers[i % len(markers)], label=label)
    ax.set_xlabel(x)
    ax.set_ylabel("steps")
    if reached:
        ax.legend(fontsize=6)
    else:
        ax.text(0.5, 0.5, "no milestone reached at any grid point", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def sweep_curves(curves: dict[str, pd.DataFrame], title: str,
                 metrics: tuple[str, ...] = ("train_acc", "test_inferred_iid", "test_inferred_ood")):
    """One panel per metric, one line per grid point: the curves behind a sweep's milestone table."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False, sharey=True)
    for ax, metric in zip(axes[0], metrics):
        for name, df in curves.items():
            if metric in df:
                ax.plot(df["step"], df[metric], label=name, linewidth=1.2)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(-0.02, 1.05)
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


__all__ = ["regime_panels", "grokking_curve", "transfer_grid", "lens_profiles", "causal_heatmaps",
           "milestone_sweep", "sweep_curves"]
