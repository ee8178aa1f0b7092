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


PAPER_STYLE = {"markerfacecolor": "none", "linestyle": "none", "markersize": 5, "markeredgewidth": 1.0}


def _scaled(df: pd.DataFrame, scale: float | None) -> pd.DataFrame:
    """``df`` with its step axis divided by ``scale`` (a run's saturation step), step 0 dropped (log axis)."""
    if not scale:
        return df
    out = df[df["step"] > 0].copy()
    out["step"] = out["step"] / scale
    return out


def regime_panels(curves: dict[str, pd.DataFrame], title: str, bridge_metric: str = "bridge_found",
                  t_sats: dict[str, int | None] | None = None, paper: dict[str, tuple[list[dict], int]] | None = None):
    """He et al. Fig. 2 analogue: per regime, the bridge measure, OOD accuracy (exact match and target found) and
    training accuracy. ``t_sats``: each run's saturation step; when every run has one the step axis is step / t_sat
    (log scale), so runs of any scale compare. ``paper``: regime -> (He et al.'s rows, their saturation step), drawn
    as hollow markers on the same axes."""
    t_sats = t_sats or {}
    scaled = bool(curves) and all(t_sats.get(name) for name in curves)
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.0), squeeze=False, sharey=True)
    for ax, (name, df) in zip(axes[0], curves.items()):
        df = _scaled(df, t_sats.get(name) if scaled else None)
        _curve(ax, df, f"{bridge_metric}_ood", BRIDGE_LABELS.get(bridge_metric, bridge_metric), COLORS["bridge"],
               "o")
        _curve(ax, df, "target_found_ood", "OOD target found", COLORS["ood"], "s")
        _curve(ax, df, "test_inferred_ood", "OOD exact match", COLORS["ood"], None, "--")
        _curve(ax, df, "train_acc", "training accuracy", COLORS["train"], "^")
        if paper and name in paper and scaled:
            rows, t_sat = paper[name]
            ref = _scaled(pd.DataFrame(rows), t_sat)
            for col, label, color, marker in (("bridge_found_ood", "He et al. bridge found", COLORS["bridge"], "o"),
                                              ("test_inferred_ood", "He et al. OOD (target found)", COLORS["ood"],
                                               "s"),
                                              ("train_acc", "He et al. training", COLORS["train"], "^")):
                if col in ref:
                    sub = ref[ref[col].notna()]
                    ax.plot(sub["step"], sub[col], marker=marker, color=color, label=label, **PAPER_STYLE)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step / t_sat (log)" if scaled else "step")
        if scaled:
            ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.05)
    axes[0][0].set_ylabel("rate")
    axes[0][-1].legend(fontsize=6, loc="lower right")
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


def contrast_panels(panels: dict[str, dict[str, pd.DataFrame]], chance: dict[str, float | None], title: str):
    """Wang et al. Fig. 1 analogue, both tasks side by side: per task (panel), training, ID test and OOD test exact
    match vs step, one line per seed (the first solid, the others dashed), and the OOD chance level dotted."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.2), squeeze=False, sharey=True)
    for ax, (task, runs) in zip(axes[0], panels.items()):
        for i, df in enumerate(runs.values()):
            style = "-" if i == 0 else "--"
            for col, label, color in (("train_acc", "training", COLORS["train"]),
                                      ("test_inferred_iid", "ID test", COLORS["iid"]),
                                      ("test_inferred_ood", "OOD test", COLORS["ood"])):
                _curve(ax, df, col, label if i == 0 else None, color, None, style)  # colours named once
        if len(runs) > 1:  # which line is which seed: by style
            ax.plot([], [], "-", color="gray", label=next(iter(runs)))
            ax.plot([], [], "--", color="gray", label=", ".join(list(runs)[1:]))
        if chance.get(task) is not None:
            ax.axhline(chance[task], color=COLORS["ood"], linestyle=":", linewidth=1,
                       label=f"OOD chance {chance[task]:.2f}")
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(-0.02, 1.05)
        ax.legend(fontsize=6, loc="lower right")
    axes[0][0].set_ylabel("exact match")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def transfer_grid(runs: dict[str, pd.DataFrame], categories: list[tuple[str, str]], title: str,
                  bridge_metric: str = "bridge_found", scales: dict[str, int | None] | None = None,
                  paper: dict[str, tuple[dict, int]] | None = None):
    """He et al. Fig. 3/4 analogue: rows = starting models, columns = categories; New Fact accuracy, composition
    exact match and the bridge measure vs fine-tuning step. ``scales``: each fine-tune's steps to New Fact >= 0.99;
    when every row has one the step axis is divided by it. ``paper``: row -> (He et al.'s points for that parent,
    measure -> [(step, value)], and their New Fact step), drawn as hollow markers."""
    scales = scales or {}
    scaled = bool(runs) and all(scales.get(name) for name in runs)
    fig, axes = plt.subplots(len(runs), len(categories), figsize=(3.2 * len(categories), 2.2 * len(runs)),
                             squeeze=False, sharex=True, sharey=True)
    for r, (name, df) in enumerate(runs.items()):
        if scaled:
            df = df.assign(step=df["step"] / scales[name])
        for c, (cat, label) in enumerate(categories):
            ax = axes[r][c]
            _curve(ax, df, f"{bridge_metric}_{cat}", bridge_metric.replace("_", " "), COLORS["bridge"], "o")
            _curve(ax, df, cat, "composition exact match", COLORS["comp"], "s")
            _curve(ax, df, f"{cat}_retained", "exact match, old hop kept", COLORS["comp"], None, "--")
            _curve(ax, df, "atomic_new", "New Fact acc", COLORS["new"], "^")
            if paper and name in paper and scaled:
                points, t_new = paper[name]
                base = cat.replace("_powered", "")
                for measure, text, color, marker in ((base, "He et al. exact match", COLORS["comp"], "s"),
                                                     (f"bridge_{base}", "He et al. bridge found", COLORS["bridge"],
                                                      "o"),
                                                     ("atomic_new", "He et al. New Fact", COLORS["new"], "^")):
                    xy = points.get(measure, [])
                    if xy:
                        ax.plot([x / t_new for x, _ in xy], [y for _, y in xy], marker=marker, color=color,
                                label=text, **PAPER_STYLE)
            ax.set_ylim(-0.02, 1.05)
            if r == 0:
                ax.set_title(label, fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            if r == len(runs) - 1:
                ax.set_xlabel("step / steps to New Fact 0.99" if scaled else "step", fontsize=8)
    axes[-1][-1].legend(fontsize=6, loc="lower right")
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


def phase_diagram(curves: dict[float, pd.DataFrame], table: pd.DataFrame, x: str, title: str,
                  metric: str = "test_inferred_iid", milestone: str = "t_id90"):
    """Wang et al. Fig. 2 at any scale: ID test curves per swept value against steps and against epochs, and the
    steps (and epochs) to ``milestone`` against the value. A value whose run never reached it is marked at its step
    cap; the caption line names the range where the critical value lies."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    cmap = plt.get_cmap("viridis")
    values = sorted(curves)
    for i, value in enumerate(values):
        df = curves[value]
        color = cmap(i / max(len(values) - 1, 1))
        if metric in df:
            axes[0].plot(df["step"], df[metric], color=color, label=f"{x.split('.')[-1]} {value:g}", linewidth=1.2)
            if "epoch" in df:
                axes[1].plot(df["epoch"], df[metric], color=color, linewidth=1.2)
    for ax, xlabel in ((axes[0], "step"), (axes[1], "epoch")):
        ax.set_xlabel(xlabel)
        ax.set_ylim(-0.02, 1.05)
        ax.set_ylabel(metric)
    axes[0].legend(fontsize=6)
    table = table.sort_values(x)
    reached = table[table[milestone].notna()]
    missed = table[table[milestone].isna()]
    ax = axes[2]
    ax.plot(reached[x], reached[milestone], "o-", color=COLORS["iid"], label=f"steps to {milestone}")
    if not missed.empty:
        ax.plot(missed[x], missed["steps"], "x", color=COLORS["ood"], markersize=8, label="not reached (step cap)")
    if "t_id90_epochs" in reached and reached["t_id90_epochs"].notna().any():
        twin = ax.twinx()
        twin.plot(reached[x], reached["t_id90_epochs"], "s--", color=COLORS["train"], markersize=3,
                  label="epochs")
        twin.set_ylabel("epochs", color=COLORS["train"])
    ax.set_xlabel(x)
    ax.set_ylabel("steps")
    ax.legend(fontsize=6, loc="upper right")
    ax.set_title(critical_range(table, x, milestone), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def critical_range(table: pd.DataFrame, x: str, milestone: str = "t_id90") -> str:
    """Where the critical value lies: between the largest value that never reached the milestone and the smallest
    that did (on the swept grid and within the step cap)."""
    hit = table.loc[table[milestone].notna(), x]
    miss = table.loc[table[milestone].isna(), x]
    if hit.empty:
        return f"no value reached {milestone} within its step cap"
    if miss.empty:
        return f"every value reached {milestone}: critical value below {hit.min():g}"
    below = miss[miss < hit.min()]
    if below.empty:
        return f"{milestone} missed at {', '.join(f'{v:g}' for v in miss)} but reached below: no single threshold"
    return f"critical value between {below.max():g} (missed) and {hit.min():g} (reached)"


__all__ = ["regime_panels", "grokking_curve", "transfer_grid", "lens_profiles", "causal_heatmaps", "phase_diagram",
           "critical_range", "milestone_sweep", "sweep_curves"]
