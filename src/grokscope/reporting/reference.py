"""He et al.'s published numbers, as the golden test feeds them to the rules and the report draws them beside a
study's curves (He et al. 2026, Fig. 2 and Fig. 4, from the authors' plotting data).

- Fig. 2: every run's anchor values at 50k ... 1.25M steps, merged with every milestone the plotting data gives (the
  first evaluation reaching training 0.9 / 0.99, bridge 0.5 / 0.9, OOD 0.5 / 0.9, the OOD maximum, the end of the
  run), with step 0 at the chance floor the paper reports (bridge found 0.2-0.3%). OOD is the "target found" rate
  the paper plots. n: 2,040 OOD queries, 3,000 training probes.
- Fig. 4: per parent, the final rates on He et al.'s categories with their n, the steps to New Fact >= 0.99 and to
  new+old >= 0.9, and row A's first six evaluations.
"""

from __future__ import annotations

from grokscope.metrics import thresholds as th
from grokscope.metrics.milestones import sustained_step

ANCHORS = [50_000, 100_000, 150_000, 200_000, 300_000, 400_000, 500_000, 750_000, 1_000_000, 1_250_000]
FIG2 = {  # (training acc, bridge found, OOD target-found) at ANCHORS
    "natural": ([0.905, 0.988, 0.992, 0.997, 0.997, 0.998, 0.999, 1.000, 0.999, 1.000],           # row A
                [0.152, 0.091, 0.176, 0.325, 0.821, 0.989, 0.996, 0.998, 0.999, 0.998],
                [0.003, 0.002, 0.005, 0.002, 0.011, 0.429, 0.750, 0.735, 0.681, 0.704]),
    "both_full": ([0.988, 0.993, 0.904, 0.998, 0.999, 1.000, 1.000, 0.999, 0.997, 0.999],         # row B
                  [0.877, 0.860, 0.607, 0.946, 1.000, 1.000, 1.000, 1.000, 1.000, 1.000],
                  [1.000, 1.000, 0.844, 1.000, 1.000, 1.000, 1.000, 1.000, 1.000, 1.000]),
    "first_full": ([0.971, 0.994, 0.999, 0.998, 1.000, 1.000, 1.000, 1.000, 0.999, 1.000],        # row C (released)
                   [0.156, 0.993, 0.999, 1.000, 1.000, 1.000, 1.000, 0.999, 0.996, 1.000],
                   [0.005, 0.005, 0.006, 0.006, 0.011, 0.018, 0.077, 0.463, 0.582, 0.970]),
    "second_full": ([0.976, 0.997, 0.996, 0.982, 0.998, 0.998, 0.997, 0.999, 0.998, 0.999],       # row D
                    [0.003, 0.017, 0.018, 0.014, 0.078, 0.063, 0.173, 0.581, 0.663, 0.312],
                    [0.008, 0.130, 0.231, 0.222, 0.561, 0.654, 0.792, 0.913, 0.951, 0.939]),
    # the both-hop-half run (the autosaved panel C); its single-evaluation collapse to 0 at 1.25M is left out
    "both_half": ([0.946, 0.982, 0.991, 0.997, 0.998, 0.997, 0.997, 0.997, 0.998, None],
                  [0.074, 0.497, 0.363, 0.378, 0.083, 0.089, 0.155, 0.426, 0.229, None],
                  [0.259, 0.303, 0.335, 0.344, 0.387, 0.428, 0.455, 0.465, 0.475, None]),
}
# The milestone table: step -> {metric: value}; a level is given as its threshold (the first value at or above it).
MILESTONES = {
    "natural": {49_490: {"train_acc": 0.9}, 106_050: {"train_acc": 0.99}, 219_170: {"bridge": 0.5},
                311_080: {"bridge": 0.9}, 395_920: {"ood": 0.5}, 1_230_180: {"ood": 0.859},
                1_343_300: {"train_acc": 1.0, "bridge": 0.998, "ood": 0.683}},
    "both_full": {37_490: {"train_acc": 0.9, "ood": 0.924}, 52_486: {"bridge": 0.5, "ood": 1.0},
                  59_984: {"train_acc": 0.99, "bridge": 0.9}, 1_649_560: {"train_acc": 1.0, "bridge": 0.999,
                                                                          "ood": 0.999}},
    "first_full": {43_740: {"train_acc": 0.9}, 58_320: {"bridge": 0.5}, 72_900: {"bridge": 0.9},
                   94_770: {"train_acc": 0.99}, 743_580: {"ood": 0.5}, 1_057_050: {"ood": 0.9},
                   1_202_850: {"ood": 0.978}, 1_603_800: {"bridge": 1.0, "ood": 0.220}},
    "second_full": {43_650: {"train_acc": 0.9}, 80_025: {"train_acc": 0.99}, 291_000: {"ood": 0.5},
                    647_475: {"bridge": 0.5}, 676_575: {"ood": 0.9}, 1_491_375: {"ood": 0.968},
                    1_600_500: {"train_acc": 0.999, "bridge": 0.653, "ood": 0.968}},
    "both_half": {43_104: {"train_acc": 0.9}, 136_496: {"train_acc": 0.99}, 653_744: {"bridge": 0.5},
                  1_537_376: {"ood": 0.486}, 1_580_480: {"bridge": 0.078, "ood": 0.477}},
}
STEP0 = {"train_acc": 0.0, "bridge": 0.003, "ood": 0.0}
KEYS = {"train_acc": "train_acc", "bridge": "bridge_found_ood", "ood": "test_inferred_ood"}
N = {"train_acc": 3000, "bridge_found_ood": 2040, "test_inferred_ood": 2040}


def fig2_rows(regime: str, bridge=None, ood=None, until: int | None = None) -> list[dict]:
    """The dense series of one Fig. 2 run as metrics rows (with n), in step order. ``bridge`` / ``ood`` replace the
    anchor values (a world that differs from the paper's); that metric's milestones then go too."""
    train, br, oo = FIG2[regime]
    by_step = {0: dict(STEP0)}
    for s, a, b, o in zip(ANCHORS, train, bridge or br, ood or oo):
        if a is not None:
            by_step[s] = {"train_acc": a, "bridge": b, "ood": o}
    replaced = {k for k, v in (("bridge", bridge), ("ood", ood)) if v is not None}
    for s, values in MILESTONES[regime].items():
        kept = {k: v for k, v in values.items() if k not in replaced}
        if kept:
            by_step.setdefault(s, {}).update(kept)
    rows = []
    for s in sorted(by_step):
        if until is not None and s > until:
            break
        row = {"step": s, **{KEYS[k]: v for k, v in by_step[s].items()}}
        rows.append({**row, **{f"n/{k}": N[k] for k in N if k in row}})
    return rows


# Fig. 4: (New Fact acc, n), new+old (EM, n), new+old bridge, old+new (EM, n), old+new bridge, new+new EM, new+new
# bridge (steady, n = 3,000), steps to New Fact >= 0.99, steps to new+old >= 0.9 (None: never)
FIG4 = {
    "natural": ((1.0, 2000), (1.000, 16), 1.000, (0.000, 18), 1.000, 0.007, 0.966, 2928, 5856),      # row A
    "both_full": ((1.0, 2000), (1.000, 26), 1.000, (0.020, 35), 1.000, 0.036, 0.992, 2928, 5856),    # row B
    "first_full": ((1.0, 2000), (1.000, 33), 1.000, (0.000, 31), 1.000, 0.004, 0.992, 2928, 7808),   # row C
    "second_full": ((1.0, 2000), (0.355, 33), 0.367, (0.000, 28), 0.23, 0.002, 0.195, 1952, None),   # row D
    "control": ((0.956, 2000), (0.312, 16), 0.000, (0.000, 18), 0.0, 0.001, 0.001, 3904, None),     # row E
    "both_half": ((1.0, 2000), (0.350, 36), 0.983, (0.000, 29), 0.586, 0.001, 0.976, 2928, None),   # row F
}
FT_EVAL = 976  # steps between He et al.'s fine-tuning evaluations; Fig. 4 plots the first 40
FT_END = 40 * FT_EVAL
# Row A's first evaluations (steps 976 ... 5,856), then 1.000 to the 40th; row B: 0.808 at 2,928 and 1.000 from
# 5,856 (the reference gives no other point of row B).
NATURAL_NEW_FACT = [0.022, 0.259, 0.994, 1.0, 1.0, 1.0]
NATURAL_NEW_OLD = [0.000, 0.125, 0.625, 0.688, 0.875] + [1.0] * 35
BOTH_NEW_OLD = {3 * FT_EVAL: 0.808, **{k * FT_EVAL: 1.0 for k in range(6, 41)}}


def fig4_new_old_rows(regime: str) -> list[dict]:
    """The new+old exact-match curve (with n) of Fig. 4 rows A and B, as far as the reference gives it."""
    if regime == "natural":
        return [{"step": (i + 1) * FT_EVAL, "new_old": v, "n/new_old": 16} for i, v in enumerate(NATURAL_NEW_OLD)]
    if regime == "both_full":
        return [{"step": s, "new_old": v, "n/new_old": 26} for s, v in BOTH_NEW_OLD.items()]
    return []


def fig4_points(regime: str) -> dict[str, list[tuple[int, float]]]:
    """Fig. 4's points for one parent, measure -> [(fine-tuning step, value)]: the steady values at the end of the
    plotted window, row A's first evaluations, and New Fact reaching 0.99."""
    if regime not in FIG4:
        return {}
    new, no, br, on, on_br, nn, nn_br, t_new, _ = FIG4[regime]
    end = [("new_old", no[0]), ("bridge_new_old", br), ("old_new", on[0]), ("bridge_old_new", on_br),
           ("new_new", nn), ("bridge_new_new", nn_br), ("atomic_new", new[0])]
    points = {m: [(FT_END, v)] for m, v in end}
    points["atomic_new"].insert(0, (t_new, 0.99))
    if regime == "natural":
        points["atomic_new"] = [((i + 1) * FT_EVAL, v) for i, v in enumerate(NATURAL_NEW_FACT)] + [(FT_END, 1.0)]
        points["new_old"] = [(r["step"], r["new_old"]) for r in fig4_new_old_rows("natural")]
    if regime == "both_full":
        points["new_old"] = [(r["step"], r["new_old"]) for r in fig4_new_old_rows("both_full")]
    return points


def fig2_t_sat(regime: str) -> int | None:
    """Saturation step of a Fig. 2 run under the findings' rule (training 0.99, kept): the figures scale the paper's
    step axis by it, as they scale a study's runs by theirs."""
    return sustained_step(fig2_rows(regime), "train_acc", th.SATURATION)


def fig4_new_fact_step(regime: str) -> int | None:
    return FIG4[regime][7] if regime in FIG4 else None
