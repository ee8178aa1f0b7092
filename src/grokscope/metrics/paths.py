"""Do two checkpoints use the same inference path? The equivalence test behind He et al.'s Finding 1, torch-free so
that the analysis computes it and the report can re-decide it from the stored profiles and maps
(``docs/methods.md``, "Path comparison").

A path is where the family's bridge measure lives across stages (the bridge profile) plus Wang et al.'s
causal-strength map (stage x position). Each is a set of shares measured on queries, so each cell has sampling
noise; the test asks whether the two paths differ by less than the measure can resolve:

- a checkpoint "has a bridge path" when its profile peaks at ``PATH_MIN_LEVEL`` or higher; exactly one with a path:
  different; neither: undetermined;
- both with a path: the **margin** of a component (profile, map) is ``SAME_PATH_MARGIN`` x the largest change that
  moving the path by one stage (and one position) makes: the measure's own resolution, capped at
  ``SAME_PATH_MAX_MARGIN``. A component is **same** when every cell's difference has its 90% interval inside
  (-margin, margin) (two one-sided tests at 5% per cell; requiring every cell is an intersection-union test, so no
  multiplicity correction), **different** when some cell's Bonferroni-corrected 90% interval lies wholly outside it,
  and **undecided at this n** otherwise. A component whose margin is 0 (a flat path: moving it changes nothing)
  cannot say "same" and is left out.
- The intervals come from a seeded bootstrap over the queries behind each cell: the per-query 0/1 records when the
  comparison stored them, else each cell resampled as a binomial share of its n (an equivalent for one cell; it
  ignores that one query's stages are correlated). Without n, the point difference decides.
- ``moved_path_control``: a checkpoint against its own path moved (one stage later, the first stage repeated: no
  wrap-around). Its difference is twice the margin at the cell that moved most, so it comes out "different" exactly
  when the query noise is small against the path's shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grokscope.metrics import thresholds as th

ALPHA = 0.05  # per side: a 90% interval per cell is a 5% two-one-sided equivalence test
SAME, DIFFERENT, UNDETERMINED, UNDECIDED = "same path", "different path", "undetermined", "undecided at this n"


@dataclass
class Block:
    """Cells measured on one set of queries: their shares, the number of queries (None: unknown) and, when stored,
    the per-query 0/1 records ``[queries, cells]`` the shares are means of."""

    values: np.ndarray
    n: int | None = None
    queries: np.ndarray | None = None

    def resample(self, draws: int, rng) -> np.ndarray:
        """[draws, cells] bootstrap replicates of the shares."""
        if self.queries is not None and len(self.queries):
            # each replicate's query counts (multinomial), times the records: draws x queries, not x cells too
            q = len(self.queries)
            weights = rng.multinomial(q, np.full(q, 1.0 / q), size=draws)
            return weights @ self.queries / q
        if self.n:
            return rng.binomial(self.n, np.clip(self.values, 0, 1), (draws, len(self.values))) / self.n
        return np.broadcast_to(self.values, (draws, len(self.values)))


def _corr(a, b) -> float | None:
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _as_int(n) -> int | None:
    return int(n) if n else None


def profile_block(profile, n=None, queries=None) -> Block:
    return Block(np.asarray(profile, float), _as_int(n), None if queries is None else np.asarray(queries, float))


def map_blocks(causal_map, counts=None, flips=None) -> list[Block] | None:
    """One block per position (each position's counterfactuals have their own queries); cells are stages."""
    if causal_map is None:
        return None
    m = np.asarray(causal_map, float)
    counts = counts if counts is not None else [None] * m.shape[1]
    return [Block(m[:, p], _as_int(counts[p]),
                  None if flips is None or flips[p] is None else np.asarray(flips[p], float).reshape(-1, m.shape[0]))
            for p in range(m.shape[1])]


def shifted(x, axis: int = 0) -> np.ndarray:
    """``x`` one step later along ``axis``: every entry moves up one index and the first is repeated (no wrap-around:
    rolling would bring the last stage to the front, a change no move of a path makes)."""
    x = np.asarray(x, float)
    if x.shape[axis] < 2:
        return x.copy()
    head = np.take(x, [0], axis=axis)
    return np.concatenate([head, np.take(x, np.arange(x.shape[axis] - 1), axis=axis)], axis=axis)


def moved_blocks(blocks: list[Block], by_position: bool) -> list[Block]:
    """The same measurements one stage later (and, for a map, one position over): the moved-path copy."""
    order = [0, *range(len(blocks) - 1)] if by_position and len(blocks) > 1 else range(len(blocks))
    return [Block(shifted(blocks[i].values), blocks[i].n,
                  None if blocks[i].queries is None else shifted(blocks[i].queries, axis=1)) for i in order]


def _step_size(blocks: list[Block], by_position: bool, keep: np.ndarray) -> float:
    """The largest change one move of the path makes, over the compared cells."""
    here = np.concatenate([b.values for b in blocks])
    there = np.concatenate([b.values for b in moved_blocks(blocks, by_position)])
    keep = keep & np.isfinite(here) & np.isfinite(there)
    return float(np.abs(here - there)[keep].max()) if keep.any() else 0.0


def component(a: list[Block], b: list[Block], by_position: bool, draws: int, rng,
              saturated: float | None = None) -> dict:
    """Same / different / undecided for one component (the profile, or the map), with its margin and difference."""
    va, vb = np.concatenate([x.values for x in a]), np.concatenate([x.values for x in b])
    keep = np.isfinite(va) & np.isfinite(vb)
    if saturated is not None:  # cells near 1 by construction in both make any two maps agree
        keep &= ~((va >= saturated) & (vb >= saturated))
    margin = min(th.SAME_PATH_MARGIN * min(_step_size(a, by_position, keep), _step_size(b, by_position, keep)),
                 th.SAME_PATH_MAX_MARGIN)
    out = {"cells": int(keep.sum()), "margin": margin,
           "difference": float(np.abs(va - vb)[keep].max()) if keep.any() else None}
    if not keep.any() or margin <= 0:
        return {**out, "verdict": None, "why": "flat: moving it changes nothing, so it cannot say 'same'"}
    ra = np.concatenate([x.resample(draws, rng) for x in a], axis=1)[:, keep]
    rb = np.concatenate([x.resample(draws, rng) for x in b], axis=1)[:, keep]
    diff = ra - rb
    lo, hi = np.quantile(diff, ALPHA, axis=0), np.quantile(diff, 1 - ALPHA, axis=0)
    corrected = ALPHA / diff.shape[1]
    lo_c, hi_c = np.quantile(diff, corrected, axis=0), np.quantile(diff, 1 - corrected, axis=0)
    out["interval"] = [float(lo.min()), float(hi.max())]  # the widest cell's interval bounds, for the report
    if ((lo_c > margin) | (hi_c < -margin)).any():
        return {**out, "verdict": DIFFERENT, "why": "some cell differs by more than the margin"}
    if ((lo > -margin) & (hi < margin)).all():
        return {**out, "verdict": SAME, "why": "every cell within the margin"}
    return {**out, "verdict": UNDECIDED, "why": "a cell's interval straddles the margin"}


def path_verdict(profile_a: list[float], profile_b: list[float], map_a, map_b, *, n_a=None, n_b=None,
                 map_n_a=None, map_n_b=None, hits_a=None, hits_b=None, flips_a=None, flips_b=None,
                 min_level: float = th.PATH_MIN_LEVEL, saturated: float = th.SATURATED_CELL,
                 draws: int = th.BOOTSTRAP_DRAWS, seed: int = 0) -> dict:
    """The equivalence test from two bridge profiles and two causal maps ([stages, 3] or None), with the numbers of
    queries behind them (``n_*``: the profile's, ``map_n_*``: per position) or their per-query records
    (``hits_*`` [queries, stages], ``flips_*`` per position [queries, stages])."""
    level_a, level_b = float(max(profile_a, default=0.0)), float(max(profile_b, default=0.0))
    out = {"level_a": level_a, "level_b": level_b, "min_level": min_level, "profile_corr": _corr(profile_a, profile_b),
           "profile": None, "causal_map": None, "cells_compared": 0}
    if level_a < min_level and level_b < min_level:
        return {**out, "verdict": UNDETERMINED, "why": "neither checkpoint has a bridge path"}
    if (level_a < min_level) != (level_b < min_level):
        return {**out, "verdict": DIFFERENT, "why": "only one checkpoint has a bridge path"}
    rng = np.random.default_rng(seed)
    parts = {"profile": component([profile_block(profile_a, n_a, hits_a)], [profile_block(profile_b, n_b, hits_b)],
                                  False, draws, rng)}
    blocks_a, blocks_b = map_blocks(map_a, map_n_a, flips_a), map_blocks(map_b, map_n_b, flips_b)
    if blocks_a is not None and blocks_b is not None:
        parts["causal_map"] = component(blocks_a, blocks_b, True, draws, rng, saturated)
        out["cells_compared"] = parts["causal_map"]["cells"]
    out.update(parts)
    out["resampled"] = ("per query" if hits_a is not None else "binomial at each cell's n" if n_a else
                        "not resampled (n unknown: the point difference decides)")
    decided = {k: p["verdict"] for k, p in parts.items() if p["verdict"] is not None}
    if not decided:
        return {**out, "verdict": UNDETERMINED, "why": "flat paths: the measure cannot resolve a move of the path"}
    why = "; ".join(f"{k.replace('_', ' ')} {p['verdict'] or 'left out'} (largest difference {_num(p['difference'])}, "
                    f"margin {_num(p['margin'])})" for k, p in parts.items())
    if DIFFERENT in decided.values():
        return {**out, "verdict": DIFFERENT, "why": why}
    if all(v == SAME for v in decided.values()):
        return {**out, "verdict": SAME, "why": why}
    return {**out, "verdict": UNDECIDED, "why": why}


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def stored_verdict(c: dict, **kw) -> dict:
    """``path_verdict`` on a stored comparison (``compare.json``): its profiles, maps, counts and, when present, its
    per-query records. A bridge-use comparison stored without them is not re-decided: its profile's n (the patched
    queries) was not kept, and the number of compositions would make its intervals too narrow."""
    if c.get("bridge_metric") == "bridge_use" and c.get("hits_a") is None:
        return {"verdict": UNDETERMINED, "why": "stored before per-query records were kept; re-run `grokscope "
                                                "analyze` to compare it", "profile": None, "causal_map": None}
    return path_verdict(c["profile_a"], c["profile_b"], c.get("causal_map_a"), c.get("causal_map_b"),
                        n_a=c.get("n_queries_a", c.get("n_queries")), n_b=c.get("n_queries_b", c.get("n_queries")),
                        map_n_a=c.get("causal_n_a"),
                        map_n_b=c.get("causal_n_b"), hits_a=c.get("hits_a"), hits_b=c.get("hits_b"),
                        flips_a=c.get("flips_a"), flips_b=c.get("flips_b"), **kw)


def moved(profile: list[float], causal_map) -> tuple[list[float], list | None]:
    """The same path one stage later and one position over: the profile shifted by one stage; the map shifted by one
    stage and one position (``shifted``: the first stage or position repeated, nothing wraps around)."""
    later = [float(x) for x in shifted(profile)]
    if causal_map is None:
        return later, None
    return later, shifted(shifted(causal_map, axis=0), axis=1).tolist()


def moved_path_control(c: dict) -> dict:
    """Side a of a stored comparison against its own path moved (``moved``): must come out "different path". Both
    sides have the same level and the same noise, so this exercises the margin and the intervals, not the level
    gate."""
    profile_b, map_b = moved(c["profile_a"], c.get("causal_map_a"))
    counts = c.get("causal_n_a")
    hits = c.get("hits_a")
    flips = c.get("flips_a")
    n = c.get("n_queries_a", c.get("n_queries"))
    stages = len(c["profile_a"])
    hits = None if hits is None or not len(hits) else np.asarray(hits, float).reshape(-1, stages)
    flips = None if flips is None else [np.asarray(f, float).reshape(-1, len(c["causal_map_a"])) for f in flips]
    order = [0, *range(len(flips) - 1)] if flips else []
    return path_verdict(c["profile_a"], profile_b, c.get("causal_map_a"), map_b, n_a=n, n_b=n, map_n_a=counts,
                        map_n_b=None if counts is None else [counts[0], *counts[:-1]],
                        hits_a=hits, hits_b=None if hits is None else shifted(hits, axis=1),
                        flips_a=flips, flips_b=None if flips is None else [shifted(flips[p], axis=1) for p in order])
