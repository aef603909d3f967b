"""Figures of the GFM extraction run: fidelity gained over the text prior vs query budget (the key
figure) and the defenses' trade-off (attack fidelity gain vs victim utility)."""

from __future__ import annotations

from pathlib import Path

from trustlab.reporting import RunRecord

KEY_FIGURE = "fidelity_gain_vs_budget.png"

LABELS = {"regression": "regression (paper)", "regression_residual": "regression, residual surrogate (ours)",
          "distill": "logit distillation", "text_only": "text prior (reference, gain 0)"}


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fidelity_gain(rec: RunRecord, out: Path) -> str | None:
    """Fidelity and cosine gained over the text prior vs query budget, with 95 % intervals."""
    from trustlab.systems.gfm_extraction.experiment import interval

    settings = sorted({r["setting"] for r in rec.rows if r["setting"].startswith("query_budget")},
                      key=lambda s: float(s.split("=")[1]))
    if not settings:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    for ax, metric, name in ((axes[0], "fid_gain", "fidelity gain (label agreement)"),
                             (axes[1], "cos_gain", "embedding cosine gain")):
        for m in ("regression", "regression_residual", "distill"):
            pts = []
            for s in settings:
                if any(r["setting"] == s and r["method"] == m for r in rec.rows):
                    iv = interval(rec, m, metric, s)
                    pts.append((float(s.split("=")[1]), iv["mean"], iv["mean"] - iv["lo"], iv["hi"] - iv["mean"]))
            if pts:
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[[p[2] for p in pts], [p[3] for p in pts]],
                            marker="o", capsize=3, label=LABELS[m])
        ax.axhline(0.0, color="grey", ls="--", lw=1, label=LABELS["text_only"])
        ax.set_xscale("log")
        ax.set_xlabel("query budget (fraction of the target graph's nodes, log scale)")
        ax.set_ylabel(f"{name} over text prior")
        ax.grid(alpha=0.3)
    axes[0].set_title("fidelity to the victim gained over the text prior")
    axes[1].set_title("cosine to the victim gained over the text prior")
    axes[0].legend(fontsize=7)
    n = len(rec.seeds)
    fig.suptitle(f"GFM extraction vs query budget ({n} seed{'s' if n > 1 else ''}; bars: 95 % "
                 f"{'t interval over seeds' if n > 1 else 'bootstrap interval over nodes'})", fontsize=9)
    fig.tight_layout()
    p = out / "plots" / KEY_FIGURE
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return f"plots/{KEY_FIGURE}"


def plot_defenses(rec: RunRecord, out: Path) -> str | None:
    """Attack fidelity gain (y) vs victim zero-shot accuracy for its users (x), one point per defense."""
    from trustlab.systems.gfm_extraction.experiment import interval

    settings = [s["setting"] for s in rec.summary if s["setting"].startswith("defense=") and s["method"] == "regression"]
    if not settings:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.8, 4.0))
    for s in settings:
        iv = interval(rec, "regression", "fid_gain", s)
        u = rec.mean("victim", "zs_acc", s)
        ax.errorbar([u], [iv["mean"]], yerr=[[iv["mean"] - iv["lo"]], [iv["hi"] - iv["mean"]]], marker="o",
                    capsize=3, label=s.removeprefix("defense="))
    ax.axhline(0.0, color="grey", ls="--", lw=1)
    ax.set_xlabel("victim zero-shot accuracy under the defense (utility, fraction)")
    ax.set_ylabel("attack fidelity gain over text prior")
    ax.set_title("defenses: attack fidelity vs victim utility")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    p = out / "plots" / "defenses.png"
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return "plots/defenses.png"
