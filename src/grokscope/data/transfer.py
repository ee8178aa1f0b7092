"""Fine-tuning ("transfer") dataset of He et al. §5.1, derived from a pre-training dataset.

New knowledge is new (entity, relation) pairs over the existing entities and relations (no new tokens), drawn as
two-hop chains. The fine-tuning training set is ``keep_old_train`` old items chosen by dependency closure plus the
new atomic facts; no composition involving a new fact is trained. Probes test recall of the new facts, new+new
chains, and compositions mixing one new and one old fact (the faithful set from kept atomic facts, and the
"powered" set from all pre-training ID atomic facts).
"""

from __future__ import annotations

import numpy as np

from grokscope.data.composition import sample_cap
from grokscope.data.config import DataConfig
from grokscope.data.kg import STREAM_TRANSFER, stream
from grokscope.data.store import Dataset
from grokscope.errors import GrokscopeError


def fact_lookup(atomic: np.ndarray, num_entities: int, num_relations: int) -> np.ndarray:
    """[N, R] table: index of fact (h, r) in ``atomic``, or -1 where (h, r) has no tail."""
    table = np.full((num_entities, num_relations), -1, dtype=np.int64)
    table[atomic[:, 0], atomic[:, 1]] = np.arange(len(atomic))
    return table


def select_closure(n_keys: int, dep_key: np.ndarray, dep_item: np.ndarray, n_items: int, budget: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Greedily keep atomic keys (in random order) together with every inferred item that uses them,
    while 1 + (new dependent items) fits in the budget; then fill what is left by ascending marginal cost.

    Returns boolean masks (kept keys, kept items). ``dep_key[i]`` / ``dep_item[i]``: item uses key."""
    order = np.argsort(dep_key, kind="stable")
    dep_key, dep_item = dep_key[order], dep_item[order]
    starts = np.searchsorted(dep_key, np.arange(n_keys + 1))
    kept_key = np.zeros(n_keys, dtype=bool)
    kept_item = np.zeros(n_items, dtype=bool)
    remaining = budget

    def try_add(key: int) -> None:
        nonlocal remaining
        deps = dep_item[starts[key]:starts[key + 1]]
        new = np.unique(deps[~kept_item[deps]])
        if 1 + len(new) <= remaining:
            kept_key[key] = True
            kept_item[new] = True
            remaining -= 1 + len(new)

    for key in rng.permutation(n_keys):
        if remaining <= 0:
            break
        try_add(int(key))
    if remaining > 0:  # second pass over the rest, cheapest first
        rest = np.flatnonzero(~kept_key)
        cost = np.array([np.count_nonzero(~kept_item[dep_item[starts[k]:starts[k + 1]]]) for k in rest])
        for key in rest[np.argsort(cost, kind="stable")]:
            if remaining <= 0:
                break
            try_add(int(key))
    return kept_key, kept_item


def draw_new_facts(used: np.ndarray, n_new: int, attempts: int, rng: np.random.Generator,
                   tails: np.ndarray | None = None) -> np.ndarray:
    """Phase A draws chains a -r1-> b -r2-> t over unused (entity, relation) pairs; phase B tops
    up with single unused edges. Returns rows (h, r, t); ``used`` [N, R] is updated in place. ``tails``: the entities
    every new fact's tail is drawn from (the chain's b and t; None = any entity, as the authors' code draws)."""
    n_ent, n_rel = used.shape
    edges: list[tuple[int, int, int]] = []
    target = 2 * (n_new // 2)
    tries = 0
    pool = np.arange(n_ent) if tails is None or len(tails) == 0 else np.asarray(tails)
    while len(edges) < target and tries < attempts:
        tries += 1
        a = int(rng.integers(0, n_ent))
        b, t = (int(x) for x in (rng.integers(0, n_ent, size=2) if tails is None else rng.choice(pool, size=2)))
        free_a, free_b = np.flatnonzero(~used[a]), np.flatnonzero(~used[b])
        if len(free_a) == 0 or len(free_b) == 0:
            continue
        r1, r2 = int(rng.choice(free_a)), int(rng.choice(free_b))
        if a == b and r1 == r2:
            continue
        used[a, r1] = used[b, r2] = True
        edges += [(a, r1, b), (b, r2, t)]
    while len(edges) < n_new:  # phase B
        free = np.flatnonzero(~used.ravel())
        if len(free) == 0:
            raise GrokscopeError(f"only {len(edges)} new facts fit: every (entity, relation) pair is used; lower "
                                 f"num_new_atomic or raise num_relations")
        pair = int(rng.choice(free))
        h, r = divmod(pair, n_rel)
        used[h, r] = True
        edges.append((h, r, int(rng.integers(0, n_ent)) if tails is None else int(rng.choice(pool))))
    return np.array(edges, dtype=np.int64).reshape(-1, 3)


def _chains(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Join facts (h, r1, b) x (b, r2, t) on b: rows (h, r1, r2, b, t)."""
    order = np.argsort(second[:, 0], kind="stable")
    second = second[order]
    lo = np.searchsorted(second[:, 0], first[:, 2], side="left")
    hi = np.searchsorted(second[:, 0], first[:, 2], side="right")
    n = hi - lo
    i = np.repeat(np.arange(len(first)), n)
    j = np.repeat(lo, n) + (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n))
    rows = np.empty((len(i), 5), dtype=np.int32)
    rows[:, 0], rows[:, 1] = first[i, 0], first[i, 1]
    rows[:, 2], rows[:, 3], rows[:, 4] = second[j, 1], first[i, 2], second[j, 2]
    return rows


def _atomic_rows(hrt: np.ndarray) -> np.ndarray:
    rows = np.full((len(hrt), 5), -1, dtype=np.int32)
    rows[:, 0], rows[:, 1], rows[:, 4] = hrt[:, 0], hrt[:, 1], hrt[:, 2]
    return rows


def _mixed(new: np.ndarray, old: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compositions new->old (category 1) and old->new (category 2), de-duplicated by query (h, r1, r2)."""
    new_old, old_new = _chains(new, old), _chains(old, new)
    rows = np.concatenate([new_old, old_new])
    cat = np.r_[np.full(len(new_old), 1, np.uint8), np.full(len(old_new), 2, np.uint8)]
    _, first = np.unique(rows[:, :3], axis=0, return_index=True)
    first = np.sort(first)
    return rows[first], cat[first]


def kept_old_items(parent: Dataset, lookup: np.ndarray, budget: int, rng: np.random.Generator):
    """Old items kept by closure: keys are the old training atomic facts, items the old compositions that use them
    (``select_closure``). Returns (kept key mask, kept composition mask)."""
    atomic, train_atomic = parent.arrays["atomic"], parent.arrays["train_atomic"]
    train_inf = parent.arrays["train_inferred"]
    key_fact = lookup[train_atomic[:, 0], train_atomic[:, 1]]
    key_of_fact = np.full(len(atomic), -1, dtype=np.int64)
    key_of_fact[key_fact] = np.arange(len(key_fact))
    k1 = key_of_fact[lookup[train_inf[:, 0], train_inf[:, 1]]]
    k2 = key_of_fact[lookup[train_inf[:, 3], train_inf[:, 2]]]
    items = np.arange(len(train_inf))
    dep_key, dep_item = np.concatenate([k1, k2]), np.concatenate([items, items])
    valid = dep_key >= 0
    return select_closure(len(key_fact), dep_key[valid], dep_item[valid], len(train_inf), budget, rng)


RETENTION_SETS = {  # probe type -> what it holds (the old atomic facts, by how the fine-tuning data replays them)
    "atomic_kept": "kept as atomic facts",
    "atomic_hop_replayed": "replayed only as a hop of a kept composition",
    "atomic_not_replayed": "not replayed",
}


def retention_sets(atomic: np.ndarray, lookup: np.ndarray, kept_atomic: np.ndarray,
                   kept_inferred: np.ndarray) -> dict[str, np.ndarray]:
    """The old atomic facts (ID and OOD) split by how the fine-tuning data replays them (``RETENTION_SETS``), as
    probe arrays: the fine-tune's recall of each is its retention of that kind."""
    kept = np.zeros(len(atomic), bool)
    kept[lookup[kept_atomic[:, 0], kept_atomic[:, 1]]] = True
    hop = np.zeros(len(atomic), bool)
    if len(kept_inferred):
        hop[lookup[kept_inferred[:, 0], kept_inferred[:, 1]]] = True
        hop[lookup[kept_inferred[:, 3], kept_inferred[:, 2]]] = True
    masks = {"atomic_kept": kept, "atomic_hop_replayed": hop & ~kept, "atomic_not_replayed": ~hop & ~kept}
    return {f"probe.{name}": atomic[mask] for name, mask in masks.items()}


def check_transfer_parent(parent: Dataset) -> None:
    """A transfer set is derived from a composition pre-training dataset."""
    if parent.meta.get("kind") == "transfer":
        raise GrokscopeError("the parent is already a transfer dataset; derive the transfer set from a "
                             "pre-training dataset")
    if parent.task != "composition":
        raise GrokscopeError(f"transfer sets are new two-hop facts (He et al. §5.1): the parent is a {parent.task} "
                             f"dataset; derive it from a composition dataset")


def build_transfer(parent: Dataset, cfg: DataConfig) -> Dataset:
    """The transfer dataset of ``parent`` (a pre-training dataset), following He et al. §5.1 and the authors' code,
    with sizes scaled by N."""
    check_transfer_parent(parent)
    cfg.validate(transfer=True)
    n_ent, n_rel = parent.vocab.num_entities, parent.vocab.num_relations
    rng = stream(cfg.transfer_seed, STREAM_TRANSFER)
    atomic = parent.arrays["atomic"]
    is_ood = parent.arrays["atomic.is_ood"].astype(bool)
    lookup = fact_lookup(atomic, n_ent, n_rel)

    train_atomic, train_inf = parent.arrays["train_atomic"], parent.arrays["train_inferred"]
    kept_key, kept_item = kept_old_items(parent, lookup, cfg.n_keep_old, rng)

    # --- new facts
    used = lookup >= 0
    tails = np.unique(train_atomic[kept_key][:, 0]) if cfg.transfer_draw == "kept" else None
    new_hrt = draw_new_facts(used, cfg.n_new_atomic, cfg.new_fact_attempts, rng, tails)
    new_rows = _atomic_rows(new_hrt)

    # --- probes
    kept_atomic_rows = train_atomic[kept_key]
    old_hrt = lambda rows: np.stack([rows[:, 0], rows[:, 1], rows[:, 4]], axis=1).astype(np.int64)  # noqa: E731
    new_new = _chains(new_hrt, new_hrt)
    new_new = new_new[sample_cap(rng, len(new_new), cfg.cap_test_inferred_new)]
    rng.shuffle(new_new)
    mix, mix_cat = _mixed(new_hrt, old_hrt(kept_atomic_rows))
    perm = rng.permutation(len(mix))[:cfg.cap_test_inferred_mix]
    mix, mix_cat = mix[perm], mix_cat[perm]
    id_probe = parent.probe("id_atomic")
    id_probe_facts = np.zeros(len(atomic), dtype=bool)
    id_probe_facts[lookup[id_probe[:, 0], id_probe[:, 1]]] = True
    old_hop = np.where(mix_cat == 1, lookup[mix[:, 3], mix[:, 2]], lookup[mix[:, 0], mix[:, 1]])
    powered, powered_cat = _mixed(new_hrt, old_hrt(atomic[~is_ood]))
    perm = rng.permutation(len(powered))[:cfg.cap_test_inferred_mix]
    powered, powered_cat = powered[perm], powered_cat[perm]

    arrays = {
        "atomic": np.concatenate([atomic, new_rows]),
        "atomic.is_ood": np.concatenate([is_ood, np.zeros(len(new_rows), bool)]),
        "atomic.is_new": np.r_[np.zeros(len(atomic), bool), np.ones(len(new_rows), bool)],
        "train_atomic": np.concatenate([kept_atomic_rows, new_rows]),
        "train_atomic.is_new": np.r_[np.zeros(len(kept_atomic_rows), bool), np.ones(len(new_rows), bool)],
        "train_inferred": train_inf[kept_item],
        "train_inferred.source": parent.arrays["train_inferred.source"][kept_item],
        # Every composition the parent's model was trained on: bridge use never patches towards one of these.
        "pretrain_inferred": train_inf,
        "valid": parent.arrays["valid"],
        **{k: v for k, v in parent.arrays.items() if k.startswith("probe.")},
        "probe.atomic_new": new_rows,
        "probe.test_inferred_new": new_new,
        "probe.test_inferred_new_mix": mix,
        "probe.test_inferred_new_mix.category": mix_cat,
        "probe.test_inferred_new_mix.old_in_id_probe": id_probe_facts[old_hop],
        "probe.test_inferred_new_mix_powered": powered,
        "probe.test_inferred_new_mix_powered.category": powered_cat,
        **retention_sets(atomic, lookup, train_atomic[kept_key], train_inf[kept_item]),
    }
    warnings = []
    if len(mix) < cfg.cap_test_inferred_mix:
        warnings.append(f"only {len(mix)} faithful mixed probes exist with {int(kept_key.sum())} kept atomic "
                        f"facts (the original printed the same warning); the powered set has {len(powered)}")
    meta = {
        "kind": "transfer",
        "name": parent.meta["name"] + "_finetuning",
        "config": {**parent.meta["config"], **{k: getattr(cfg, k) for k in (
            "num_new_atomic", "keep_old_train", "cap_test_inferred_new", "cap_test_inferred_mix",
            "transfer_seed", "new_fact_attempts", "transfer_draw")}},
        "parent_fingerprint": parent.meta["fingerprint"],
        "parent_name": parent.meta["name"],
        "kept_old": {"atomic": int(kept_key.sum()), "inferred": int(kept_item.sum())},
        "warnings": warnings,
    }
    return Dataset(meta=meta, vocab=parent.vocab, arrays=arrays).finalize()
