"""FVL-FP: fair federated prompt tuning of CLIP-like vision-language models (arXiv:2505.01851)."""

from trustlab.systems.base import SystemSpec

SYSTEM = SystemSpec(
    name="fvlfp",
    title="Fair federated prompt tuning of CLIP-like models (CDFP + DSOP + FPF)",
    paper="Chen et al., Mitigating Group-Level Fairness Disparities in Federated Visual Language Models, "
    "arXiv 2025 (arXiv:2505.01851)",
    config="trustlab.systems.fvlfp.config:Config",
    run="trustlab.systems.fvlfp.experiment:run",
    headline=[("fvlfp", "dp_diff"), ("promptfl", "dp_diff"), ("fvlfp", "acc"), ("promptfl", "acc")],
    status="reproduced (qualitative; paper tables not public)",
    demo=("fed fvlfp --engine flower-inline --num-clients 4 --rounds 2 --out {out}",),
    key_figure="fairness_vs_accuracy.png",
)
