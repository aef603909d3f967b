"""Development harness: score methods on a validation split carved from the Fashion-MNIST *training* file.

The test file is never read. The split is drawn with its own permutation seed: ``n_val`` stratified
validation points first, then ``n_train`` stratified training points from the remaining ones (disjoint).
Every unit runs exactly the default experiment's code path (:func:`experiment.train_and_evaluate`, same
model, budgets, attacks and AutoAttack), so its wall times also measure the default run's cost.

Usage (the fifth session's runs are in README.md)::

    python -m trustlab.systems.uadat.validation --seeds 100 101 --methods pgd_at trades uadat \\
        --set n_train=3000 --set n_test=600 --set n_aa=600 --out runs/uadat-val.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from trustlab.config import apply_overrides, parse_set
from trustlab.data.images import load_fashion_mnist, stratified_indices
from trustlab.errors import UserError
from trustlab.systems.uadat.config import ALL_METHODS, Config
from trustlab.systems.uadat.data import Splits
from trustlab.systems.uadat.experiment import train_and_evaluate
from trustlab.utils.logging import get_logger
from trustlab.utils.seed import make_rng

log = get_logger(__name__)


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
    args = ap.parse_args(argv)
    try:
        cfg = apply_overrides(Config(), parse_set(args.sets))
        cfg.validate()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    splits = validation_splits(cfg, args.perm_seed)
    rows = []
    for seed in args.seeds:
        for m in args.methods:
            t0 = time.perf_counter()
            r = train_and_evaluate(m, seed, cfg, splits, torch.device("cpu"))
            row = {"label": args.label, "method": m, "seed": seed, "wall_s": time.perf_counter() - t0,
                   **r["metrics"], "sets": args.sets}
            rows.append(row)
            if args.out:
                with args.out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
    for m in args.methods:
        sel = [r for r in rows if r["method"] == m]
        means = {k: round(statistics.fmean(r[k] for r in sel), 4)
                 for k in ("nat_acc", "pgd_acc", "aa_acc", "wall_s") if k in sel[0]}
        print(f"{args.label or '-'} {m}: {means} per seed aa={[round(r.get('aa_acc', float('nan')), 3) for r in sel]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
