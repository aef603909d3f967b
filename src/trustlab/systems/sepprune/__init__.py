"""SepPrune: structured channel pruning of speech-separation models (Ji et al., AAAI 2026)."""

from typing import Any

from trustlab.systems.base import SystemSpec

SYSTEM = SystemSpec(
    name="sepprune",
    title="Structured channel pruning of speech separation models (differentiable masks, MACs budget)",
    paper="Ji et al., SepPrune: Structured Pruning for Efficient Deep Speech Separation, AAAI 2026 (arXiv:2505.12079)",
    config="trustlab.systems.sepprune.config:Config",
    run="trustlab.systems.sepprune.experiment:run",
    headline=[("sepprune", "si_snri_db"), ("sepprune_l1init", "si_snri_db"), ("l1", "si_snri_db"),
              ("hrank", "si_snri_db"), ("random", "si_snri_db"), ("scratch", "si_snri_db"), ("dense", "si_snri_db"),
              ("sepprune", "macs_ratio"), ("sepprune", "recovery"), ("sepprune", "speedup_vs_scratch")],
    status="reproduced",
    demo=("prune --model trustlab.systems.sepprune.tool:demo_separator --data embedded --macs 0.5 --steps 20 "
          "--finetune-steps 10 --segment 0.5 --out {out}",),
    key_figure="si_snri_vs_macs.png",
)


def __getattr__(name: str) -> Any:
    """``load_pruned`` (rebuild a ``trustlab prune`` output) without importing torch-pruning at registry time."""
    if name == "load_pruned":
        from trustlab.systems.sepprune.generic import load_pruned

        return load_pruned
    raise AttributeError(name)
