"""UAD-AT's key figure: robust vs clean accuracy per method (mean over seeds, error bars = std over seeds)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from trustlab.utils.io import atomic_write_bytes

#: Drawing order and colours: baselines grey/blue, the CE rows orange, UAD-AT red, ablations light red.
_STYLE: dict[str, tuple[str, str]] = {
    "standard": ("#7f7f7f", "s"), "pgd_at": ("#1f77b4", "o"), "trades": ("#2ca02c", "o"), "mart": ("#9467bd", "o"),
    "trades_ce": ("#ff7f0e", "D"), "uadat_ce": ("#8c564b", "D"), "uadat": ("#d62728", "*"),
}


def robust_vs_clean(rows: list[dict[str, Any]], path: Path, robust_metric: str, robust_label: str,
                    labels: dict[str, str] | None = None) -> Path:
    """Scatter ``nat_acc`` (x) against ``robust_metric`` (y), one point per method, error bars over seeds.

    Args:
        rows: Result rows (``method``, ``seed``, ``nat_acc``, ``robust_metric``).
        path: The PNG to write (atomically).
        robust_metric: Row key of the robust accuracy (``aa_acc``, ``aa_reduced_acc`` or ``pgd_acc``).
        robust_label: What that metric is, for the axis label.
        labels: Legend names per method (default: the method names). Ablation rows (``uadat_no_*``) are
            left out: the figure compares methods.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if "nat_acc" in r and robust_metric in r and "_no_" not in r["method"]:
            methods.setdefault(r["method"], []).append(r)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for m, rs in methods.items():
        xs = [100 * r["nat_acc"] for r in rs]
        ys = [100 * r[robust_metric] for r in rs]
        colour, marker = _STYLE.get(m, ("#e377c2", "v"))
        sx = statistics.stdev(xs) if len(xs) > 1 else 0.0
        sy = statistics.stdev(ys) if len(ys) > 1 else 0.0
        ax.errorbar(statistics.fmean(xs), statistics.fmean(ys), xerr=sx, yerr=sy, fmt=marker, color=colour,
                    ms=11 if marker == "*" else 7, capsize=3, label=f"{(labels or {}).get(m, m)} (n={len(rs)})")
    n_seeds = max((len(v) for v in methods.values()), default=0)
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_title("Robust vs clean accuracy per method" + (f" (mean ± std over {n_seeds} seeds)" if n_seeds > 1 else "")
                 + f"\nrobust = {robust_label}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


def figure_from_results(results: str | Path, out: str | Path) -> Path:
    """Draw the key figure from a ``results.json``, naming rows and metric from the file's own config.

    Files written before the ``uadat_ce`` split (no ``extra.autoattack_name``) recorded the reduced
    composition under ``aa_acc`` and ran the ``uadat`` row with the config's ``uadat_adv_ce`` (κ); the
    legend and axis say so instead of reusing the old names.
    """
    import json

    res = json.loads(Path(results).read_text())
    extra, cfg = res.get("extra", {}), res.get("config", {})
    labels: dict[str, str] = {}
    rows = res["rows"]
    if "autoattack_name" in extra:
        metric, name = extra["autoattack_metric"], extra["autoattack_name"]
    else:
        metric, name = "aa_acc", "aa_reduced (recorded as aa_acc)"
        kappa = float(cfg.get("uadat_adv_ce", 0.0))
        if kappa:  # that row is today's uadat_ce: draw it as such
            rows = [{**r, "method": "uadat_ce"} if r["method"] == "uadat" else r for r in rows]
            labels["uadat_ce"] = f"uadat_ce (run as 'uadat', kappa={kappa:g})"
    n = cfg.get("n_aa", "?")
    return robust_vs_clean(rows, Path(out), metric, f"{name}, {n} points", labels)


def paired_from_results(results: str | Path, row: str = "uadat") -> dict[str, dict[str, float]]:
    """Paired (by seed) difference of ``row`` minus every other method on the file's AutoAttack metric, 95 % t CI."""
    import json

    from trustlab.systems.uadat.experiment import paired_interval

    res = json.loads(Path(results).read_text())
    metric = res.get("extra", {}).get("autoattack_metric", "aa_acc")
    per: dict[str, dict[int, float]] = {}
    for r in res["rows"]:
        if metric in r:
            per.setdefault(r["method"], {})[r["seed"]] = r[metric]
    a = per[row]
    return {m: paired_interval([a[s] for s in sorted(a)], [v[s] for s in sorted(a)])
            for m, v in per.items() if m != row and set(v) == set(a)}


if __name__ == "__main__":  # python -m trustlab.systems.uadat.plots RESULTS.json OUT.png [ROW]
    import sys

    print(figure_from_results(sys.argv[1], sys.argv[2]))
    for m, ci in paired_from_results(sys.argv[1], *(sys.argv[3:4] or ["uadat"])).items():
        print(f"{sys.argv[3] if len(sys.argv) > 3 else 'uadat'} - {m}: {ci['diff']:+.4f} "
              f"[{ci['ci_low']:+.4f}, {ci['ci_high']:+.4f}] (n={ci['n_pairs']})")
