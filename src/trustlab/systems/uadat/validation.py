"""Development harness: score methods on a validation split carved from the Fashion-MNIST *training* file.

The test file is never read. The split is drawn with its own permutation seed: ``n_val`` stratified
validation points first, then ``n_train`` stratified training points from the remaining ones (disjoint).
Every unit runs exactly the default experiment's code path (:func:`experiment.train_and_evaluate`, same
model, budgets, attacks and AutoAttack), so its wall times also measure the default run's cost.

Usage (the earlier sessions' runs are in docs/dev/uadat.md)::

    python -m trustlab.systems.uadat.validation --seeds 100 101 --methods pgd_at trades uadat \\
        --set n_train=1500 --set n_test=600 --set n_aa=600 --out runs/uadat-val.jsonl

**Equal tuning budget.** ``--grid`` runs every point of :data:`GRIDS` for each of ``--methods`` (16 points per
method, the same for every method) on this split with held-out seeds, appends one JSON line per unit, and
prints each method's choice by :func:`select` (highest mean validation AutoAttack accuracy over the seeds;
ties by natural accuracy, then by grid order). The grid is the learning rate x each method's own trade-off
knob (TRADES/MART/UAD-AT: beta; PGD-AT, which has none: its PGD step size)::

    python -m trustlab.systems.uadat.validation --grid --seeds 100 101 \\
        --methods pgd_at trades mart trades_ce uadat uadat_ce --out runs/uadat-grid.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from trustlab.config import apply_overrides, parse_set
from trustlab.data.images import load_fashion_mnist, stratified_indices
from trustlab.errors import UserError
from trustlab.systems.uadat.config import ALL_METHODS, Config
from trustlab.systems.uadat.data import Splits
from trustlab.systems.uadat.experiment import train_and_evaluate
from trustlab.utils.device import resolve_device
from trustlab.utils.logging import get_logger
from trustlab.utils.seed import make_rng

log = get_logger(__name__)

LRS: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)
BETAS: tuple[float, ...] = (1.0, 3.0, 6.0, 9.0)
ALPHA_FACTORS: tuple[float, ...] = (0.25, 0.4, 0.5, 0.75)  # PGD-AT step size as a fraction of eps (Madry: 2.5/steps)
_BETA_FIELD = {"trades": "trades_beta", "mart": "mart_beta", "uadat": "uadat_beta", "uadat_ce": "uadat_beta",
               "trades_ce": "uadat_beta"}


def grid(method: str, eps: float = 0.1) -> list[dict[str, Any]]:
    """The 16 settings ``method`` is tuned over (``Config`` overrides); the same size for every method."""
    if method in _BETA_FIELD:
        return [{"lr": lr, _BETA_FIELD[method]: b} for lr in LRS for b in BETAS]
    if method == "pgd_at":
        return [{"lr": lr, "train_alpha": round(f * eps, 6)} for lr in LRS for f in ALPHA_FACTORS]
    raise ValueError(f"no tuning grid for {method!r}")


GRIDS: dict[str, int] = {m: len(grid(m)) for m in ("pgd_at", "trades", "mart", "trades_ce", "uadat", "uadat_ce")}


def select(rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The chosen grid point: highest mean ``metric`` over seeds, ties by mean ``nat_acc``, then grid order.

    Args:
        rows: One dict per (point, seed) with ``point`` (the index), ``sets``, ``metric`` and ``nat_acc``.
    """
    by: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(int(r["point"]), []).append(r)
    if not by:
        raise ValueError("no rows to select from")
    seeds = {p: sorted(x["seed"] for x in v) for p, v in by.items()}
    if len({tuple(v) for v in seeds.values()}) != 1:
        raise ValueError(f"grid points were run on different seeds: {seeds}")

    def key(p: int) -> tuple[float, float, int]:
        v = by[p]
        return (statistics.fmean(x[metric] for x in v), statistics.fmean(x["nat_acc"] for x in v), -p)

    best = max(by, key=key)
    return {"point": best, "sets": by[best][0]["sets"], metric: key(best)[0], "nat_acc": key(best)[1],
            "n_points": len(by)}


def validation_splits(cfg: Config, perm_seed: int = 123) -> Splits:
    """``cfg.n_train`` training and ``cfg.n_test`` validation points, disjoint, both from the training file."""
    full = load_fashion_mnist("train", cfg.data_root)
    rng = make_rng(perm_seed)
    val_idx = stratified_indices(full.y.numpy(), cfg.n_test, rng)
    rest = np.setdiff1d(np.arange(len(full)), val_idx)
    train_idx = rest[stratified_indices(full.y.numpy()[rest], cfg.n_train, rng)]
    if np.intersect1d(train_idx, val_idx).size:
        raise AssertionError("validation and training points overlap")
    return Splits(full.subset(train_idx, note=f"validation-harness train (perm seed {perm_seed})"),
                  full.subset(val_idx, note=f"validation split from the training file (perm seed {perm_seed})"),
                  [f"validation harness: {cfg.n_train} train / {cfg.n_test} validation, both from the training file"])


def main(argv: list[str] | None = None) -> int:
    """Run every (method, seed) on the validation split; write one JSON line per unit and print the means."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101])
    ap.add_argument("--methods", nargs="+", default=["pgd_at", "trades", "uadat"], choices=ALL_METHODS)
    ap.add_argument("--label", default="", help="a name for this variant in the output lines")
    ap.add_argument("--perm-seed", type=int, default=123)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="Config field=value (repeatable)")
    ap.add_argument("--out", type=Path, help="append JSON lines here")
    ap.add_argument("--grid", action="store_true", help="run every point of each method's tuning grid")
    args = ap.parse_args(argv)
    try:
        cfg = apply_overrides(Config(), parse_set(args.sets))
        cfg.validate()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.grid:
        bad = [m for m in args.methods if m not in GRIDS]
        if bad:
            print(f"error: no tuning grid for {bad}; use some of {', '.join(GRIDS)}", file=sys.stderr)
            return 2
    splits = validation_splits(cfg, args.perm_seed)
    aa = cfg.aa_metric
    rows = []
    for m in args.methods:
        points = grid(m, cfg.eps) if args.grid else [{}]
        for i, point in enumerate(points):
            pcfg = apply_overrides(copy.deepcopy(cfg), point) if point else cfg  # never leak into the next point
            for seed in args.seeds:
                t0 = time.perf_counter()
                r = train_and_evaluate(m, seed, pcfg, splits, resolve_device(pcfg.device))
                row = {"label": args.label, "method": m, "seed": seed, "point": i, "wall_s": time.perf_counter() - t0,
                       **r["metrics"], "sets": args.sets + [f"{k}={v}" for k, v in point.items()]}
                rows.append(row)
                if args.out:
                    with args.out.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
    for m in args.methods:
        sel = [r for r in rows if r["method"] == m]
        if args.grid:
            print(f"{m}: chosen {select(sel, aa)} of {len(grid(m, cfg.eps))} grid points")
            continue
        means = {k: round(statistics.fmean(r[k] for r in sel), 4)
                 for k in ("nat_acc", "pgd_acc", aa, "wall_s") if k in sel[0]}
        print(f"{args.label or '-'} {m}: {means} per seed {aa}={[round(r.get(aa, float('nan')), 3) for r in sel]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
