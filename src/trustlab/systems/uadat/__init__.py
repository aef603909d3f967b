"""UAD-AT: uncertainty-aware distributional adversarial training (reconstructed from the abstract)."""

from trustlab.systems.base import SystemSpec

SYSTEM = SystemSpec(
    name="uadat",
    title="UAD-AT (reconstructed from the abstract): uncertainty-aware distributional adversarial training",
    paper="Dong, Qu, Wang & Ong, Enhancing Adversarial Robustness via Uncertainty-Aware Distributional "
          "Adversarial Training, 2024 (arXiv:2411.02871)",
    config="trustlab.systems.uadat.config:Config",
    run="trustlab.systems.uadat.experiment:run",
    headline=[("uadat", "aa_acc"), ("trades", "aa_acc"), ("pgd_at", "aa_acc")],
    status="reconstructed",
)
