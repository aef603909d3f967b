"""Refusal Index: measuring knowledge-aware refusal of LLMs (Pan et al., ICLR 2026, arXiv:2510.01782)."""

from trustlab.systems.base import SystemSpec

SYSTEM = SystemSpec(
    name="refusal-index",
    title="Refusal Index: knowledge-aware refusal of LLMs via a two-pass Gaussian-copula estimate",
    paper="Pan et al., Can LLMs Refuse Questions They Do Not Know? Measuring Knowledge-Aware Refusal in "
          "Factual Tasks, ICLR 2026 (arXiv:2510.01782)",
    config="trustlab.systems.refusal_index.config:Config",
    run="trustlab.systems.refusal_index.experiment:run",
    headline=[("two_pass", "ri_true"), ("two_pass", "ri_est")],
    status="reproduced (simulation) + real small-model run",
    demo=("refusal-index --model toy --data embedded --prompts standard,cautious --out {out}",
          "refusal-index --model toy --data embedded --limit 300 --temperature 0.7 --samples 5 --out {out}"),
    key_figure="ri_vs_refusal_rate.png",
)
