"""Weight-only quantization core: backends (rtn, gptq, hqq, quanto), bit plans, budgets, BQP allocation,
checkpoint writers (compressed-tensors folders and GGUF files that stock loaders read).

Used by the IMPQ system (``trustlab.systems.impq``) and usable by any other system::

    from trustlab.compression import BitPlan, apply_plan, get_backend
    plan = BitPlan.load("plan.json")
    apply_plan(model, plan, get_backend("hqq", group_size=64))
"""

from trustlab.compression.allocate import avg_bits, budget_for_avg_bits, solve_bqp, upgrade_costs
from trustlab.compression.backends import BACKENDS, Backend, get_backend
from trustlab.compression.export import FORMATS, stored_codes, write_compressed_tensors, write_gguf
from trustlab.compression.model import (
    PrefixCache,
    WeightBank,
    block_param_counts,
    collect_hessians,
    find_blocks,
    mean_nll,
    perplexity,
)
from trustlab.compression.plan import BitPlan, apply_plan, export_formats, export_packed, load_packed
from trustlab.compression.quant import QuantizedWeight, gptq_quantize, output_error, rtn_quantize

__all__ = [
    "BACKENDS", "FORMATS", "Backend", "BitPlan", "PrefixCache", "QuantizedWeight", "WeightBank", "apply_plan", "avg_bits",
    "block_param_counts", "budget_for_avg_bits", "collect_hessians", "export_formats", "export_packed",
    "find_blocks", "get_backend", "gptq_quantize", "load_packed", "mean_nll", "output_error", "perplexity",
    "rtn_quantize", "solve_bqp", "stored_codes", "upgrade_costs", "write_compressed_tensors", "write_gguf",
]
