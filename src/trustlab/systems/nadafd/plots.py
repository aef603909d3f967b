"""NADAFD's key figure: attack success rate and clean accuracy vs federated round (mean ± std over seeds)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

KEY_FIGURE = "asr_clean_vs_round.png"


def _focus(curves: dict[tuple[str, str], Any], max_lines: int) -> set[tuple[str, str]]:
    """All curves, or (when more than ``max_lines``) FedAvg, each setting's best baseline (lowest final
    mean ASR) and the two NADAFD rows: the comparison the figure is for; every curve is in ``series.csv``."""
    from trustlab.systems.nadafd.config import BASELINES

    if len(curves) <= max_lines:
        return set(curves)
    keep = {k for k in curves if k[1] in ("fedavg", "nadafd", "nadafd_collusion")}
    for setting in {s for s, _ in curves if s != "no_attack"}:
        final = {m: np.mean(per["asr"][max(per["asr"])]) for (s, m), per in curves.items()
                 if s == setting and m in BASELINES and m != "fedavg"}
        if final:
            keep.add((setting, min(final, key=final.get)))
    return keep


def plot_asr_clean(series: list[dict[str, Any]], path: str | Path, title: str = "NADAFD",
                   max_lines: int = 8) -> Path | None:
    """Two panels (ASR, clean accuracy) vs round, ±1 std band over seeds: one line per (setting, method),
    or, with more than ``max_lines`` of them, FedAvg, the best baseline and the NADAFD rows."""
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[tuple[str, str], dict[str, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in series:
        for m in ("asr", "clean_acc"):
            if m in r:
                curves[(r["setting"], r["method"])][m][int(r["step"])].append(float(r[m]))
    shown = _focus(curves, max_lines)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for (setting, method), per in sorted(curves.items()):
        if (setting, method) not in shown:
            continue
        for ax, m in zip(axes, ("asr", "clean_acc"), strict=True):
            steps = sorted(per[m])
            mu = np.array([np.mean(per[m][s]) for s in steps])
            sd = np.array([np.std(per[m][s]) for s in steps])
            (line,) = ax.plot(steps, mu, marker="o", ms=3, label=f"{method} ({setting})")
            if any(len(per[m][s]) > 1 for s in steps):
                ax.fill_between(steps, mu - sd, mu + sd, alpha=0.2, color=line.get_color())
    axes[0].set(xlabel="federated round", ylabel="attack success rate (fraction)", title="ASR", ylim=(-0.02, 1.02))
    axes[1].set(xlabel="federated round", ylabel="clean accuracy (fraction)", title="clean accuracy", ylim=(0, 1.02))
    axes[1].legend(fontsize=7, loc="lower right")
    n_seeds = len({r["seed"] for r in series})
    fig.suptitle(f"{title}: mean over {n_seeds} seed(s)" + (" ± 1 std" if n_seeds > 1 else ""))
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
