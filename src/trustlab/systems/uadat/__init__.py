"""UAD-AT: uncertainty-aware distributional adversarial training (reconstructed from the abstract)."""

from trustlab.systems.base import SystemSpec

SYSTEM = SystemSpec(
    name="uadat",
    title="UAD-AT (reconstructed from the abstract): uncertainty-aware distributional adversarial training",
    paper="Dong, Qu, Wang & Ong, Enhancing Adversarial Robustness via Uncertainty-Aware Distributional "
          "Adversarial Training, 2024 (arXiv:2411.02871)",
    config="trustlab.systems.uadat.config:Config",
    run="trustlab.systems.uadat.experiment:run",
    headline=[("uadat", "aa_reduced_acc"), ("uadat_ce", "aa_reduced_acc"), ("trades", "aa_reduced_acc"),
              ("pgd_at", "aa_reduced_acc")],
    status="reconstructed",
    demo=(
        "robust-train --data demo --arch small_cnn --method uadat --epochs 1 --batch-size 32 --steps 3 --out {out}",
        # `trustlab demo` gives each invocation its own {out} (.../verb-0, .../verb-1): the model is in verb-0
        "robust-eval --model {out}/../verb-0 --data demo --attack reduced --out {out}",
    ),
    key_figure="robust_vs_clean.png",
)
