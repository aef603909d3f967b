"""IMPQ: Shapley-based progressive quantization estimation and interaction-aware 2/4-bit allocation."""

from trustlab.systems.base import SystemSpec

SYSTEM = SystemSpec(
    name="impq",
    title="Shapley-based interaction-aware 2/4-bit mixed-precision quantization of LLMs",
    paper="IMPQ: Interaction-Aware Layerwise Mixed Precision Quantization for LLMs (arXiv:2509.15455; "
    "ACL 2026 Findings as CoopQ)",
    config="trustlab.systems.impq.config:Config",
    run="trustlab.systems.impq.experiment:run",
    headline=[("impq", "ppl", "model=tiny;backend=rtn;bits=3"), ("sensitivity", "ppl", "model=tiny;backend=rtn;bits=3"), ("lim", "ppl", "model=tiny;backend=rtn;bits=3"), ("impq", "ppl", "model=tiny;backend=rtn;bits=2.5"), ("zd", "ppl", "model=tiny;backend=rtn;bits=2.5")],
    status="reproduced (tiny Llama; SmolLM2-135M opt-in)",
    demo=("quantize tiny --avg-bits 2.5 --backend rtn --permutations 4 --seq-len 32 --n-calib 4 --n-eval 8 --out {out}",),
    key_figure="ppl_vs_bits.png",
)
