"""Diagnostic: relative weight error ``||W - Ŵ||_F / ||W||_F`` of rtn and HQQ on SmolLM2 blocks.

``python -m trustlab.systems.impq.backend_check OUT.json`` measures blocks 0, 10, 20 and 29 of SmolLM2-135M
(all linears pooled) at 3 and 4 bits with group sizes 32, 64 and 192 (192 divides both input widths,
576 and 1,536; 128 divides neither 576). The SmolLM2 weights are dequantized from a Q4_1 GGUF (4-bit,
groups of 32, float16 scale and *float* minimum), so a quantizer with a float zero point (HQQ) can
reproduce them at 4 bits / group 32, while min-max rtn with an integer zero point cannot.
"""

from __future__ import annotations

import sys
from typing import Any

from trustlab.compression.backends import get_backend
from trustlab.compression.model import all_block_linears
from trustlab.utils.io import atomic_write_json


def weight_errors(model: Any, blocks: tuple[int, ...] = (0, 10, 20, 29), group_sizes: tuple[int, ...] = (32, 64, 192),
                  bits: tuple[int, ...] = (3, 4), backends: tuple[str, ...] = ("rtn", "hqq")) -> dict[str, dict[str, float]]:
    """``{"gs=G;bits=B": {backend: relative Frobenius error over the pooled linears of ``blocks``}}``."""
    lins = all_block_linears(model)
    out: dict[str, dict[str, float]] = {}
    for gs in group_sizes:
        for b in bits:
            row = {}
            for name in backends:
                be = get_backend(name, gs)
                num = den = 0.0
                for i in blocks:
                    for m in lins[i].values():
                        w = m.weight.detach().float()
                        num += float((w - be.quantize_weight(w, b)).pow(2).sum())
                        den += float(w.pow(2).sum())
                row[name] = (num / den) ** 0.5
            out[f"gs={gs};bits={b}"] = row
    return out


def main(path: str) -> None:
    """Measure SmolLM2 and write the JSON."""
    from trustlab.systems.impq.data import load_model

    atomic_write_json(path, {"model": "smollm2", "blocks": [0, 10, 20, 29],
                             "relative_weight_error": weight_errors(load_model("smollm2").model)})


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1])
