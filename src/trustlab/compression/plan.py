"""Bit plans: ``{module name: bits}`` as JSON, applied to a model, exported to other tools' formats.

A plan file (schema ``trustlab.bitplan/1``)::

    {"schema": "trustlab.bitplan/1", "method": "impq", "model": "...", "backend": "rtn",
     "group_size": 32, "modules": {"model.layers.0.self_attn.q_proj": 4, ...}, "meta": {...}}

``meta`` carries the evidence (Shapley values, interaction matrix, budget) so a plan can be audited.
Packed exports (``rtn``/``gptq``) store uint8 codes with float16 scales and zeros in safetensors and
reload into the same architecture without pickles.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trustlab.compression.backends import Backend, get_backend
from trustlab.compression.model import all_block_linears
from trustlab.compression.quant import dequantize
from trustlab.errors import UserError
from trustlab.utils.io import atomic_write_json, load_tensors, save_tensors

SCHEMA = "trustlab.bitplan/1"


@dataclass
class BitPlan:
    """A per-module bit assignment.

    Args:
        modules: Fully-qualified ``nn.Linear`` name -> bits.
        backend: Backend the plan is meant for (any backend can apply it).
        group_size: Group size the plan was budgeted with.
        method: Allocator that produced it.
        model: Model name or path.
        meta: Free JSON-able evidence (Shapley values, budget...).
    """

    modules: dict[str, int]
    backend: str = "rtn"
    group_size: int = 32
    method: str = ""
    model: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for k, b in self.modules.items():
            if not isinstance(b, int) or isinstance(b, bool) or not 1 <= b <= 16:
                raise UserError(f"bit plan: module {k!r} has invalid bits {b!r}", "use integers such as 2 or 4")

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_block_bits(cls, net: nn.Module, bits: list[int], **kw: Any) -> BitPlan:
        """Every linear of block ``i`` of ``net`` gets ``bits[i]`` (``kw``: the other fields)."""
        blocks = all_block_linears(net)
        if len(bits) != len(blocks):
            raise ValueError(f"{len(bits)} bit entries for {len(blocks)} blocks")
        return cls(modules={k: int(b) for lins, b in zip(blocks, bits, strict=True) for k in lins}, **kw)

    def block_bits(self, model: nn.Module) -> list[int]:
        """Bits per block (raises when a block's linears disagree or are missing)."""
        out = []
        for i, lins in enumerate(all_block_linears(model)):
            vals = {self.modules.get(k) for k in lins}
            if len(vals) != 1 or None in vals:
                raise UserError(f"bit plan does not give one bit width to every linear of block {i}",
                                "use a per-block plan (all linears of a block at the same bits)")
            out.append(int(vals.pop()))  # type: ignore[arg-type]
        return out

    def avg_bits(self, model: nn.Module) -> float:
        """Weight-count-weighted average bits over the planned modules."""
        named = dict(model.named_modules())
        num = sum(named[k].weight.numel() * b for k, b in self.modules.items())
        den = sum(named[k].weight.numel() for k in self.modules)
        return num / den

    # -- JSON -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON content."""
        return {"schema": SCHEMA, "method": self.method, "model": self.model, "backend": self.backend,
                "group_size": self.group_size, "modules": dict(self.modules), "meta": self.meta}

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON (atomically)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, source: str = "plan") -> BitPlan:
        """Parse a plan dict (raises :class:`UserError` when malformed)."""
        if not isinstance(d, dict) or d.get("schema") != SCHEMA or not isinstance(d.get("modules"), dict):
            raise UserError(f"{source} is not a trustlab bit plan (schema {SCHEMA!r} with a 'modules' map)",
                            "write it with BitPlan.save or `trustlab run impq`")
        return cls(modules={str(k): v for k, v in d["modules"].items()}, backend=str(d.get("backend", "rtn")),
                   group_size=int(d.get("group_size", 32)), method=str(d.get("method", "")),
                   model=str(d.get("model", "")), meta=dict(d.get("meta") or {}))

    @classmethod
    def load(cls, path: str | Path) -> BitPlan:
        """Read a plan JSON file."""
        from trustlab.utils.io import read_json

        return cls.from_dict(read_json(path), source=f"file {str(path)!r}")


def _resolve(model: nn.Module, plan: BitPlan) -> dict[str, nn.Linear]:
    named = dict(model.named_modules())
    out = {}
    for k in plan.modules:
        m = named.get(k)
        if not isinstance(m, nn.Linear):
            raise UserError(f"bit plan names module {k!r}, which is not a Linear layer of this model",
                            "apply the plan to the model it was made for")
        out[k] = m
    return out


@torch.no_grad()
def apply_plan(model: nn.Module, plan: BitPlan, backend: Backend | None = None,
               hessians: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Quantize ``model`` in place according to ``plan`` (simulated quantization: float weights).

    Args:
        model: The float model.
        plan: The plan.
        backend: Backend to use (default: the plan's, with its group size).
        hessians: Per-module Hessians (``gptq`` only).
    """
    be = backend or get_backend(plan.backend, plan.group_size)
    for k, m in _resolve(model, plan).items():
        m.weight.data.copy_(be.quantize_weight(m.weight.data, plan.modules[k], (hessians or {}).get(k)))
    return model


_GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down"}


def export_formats(plan: BitPlan) -> dict[str, Any]:
    """Translate a plan into other tools' per-module formats.

    Returns:
        ``gptqmodel_dynamic`` (GPTQModel/vLLM ``dynamic`` regex overrides on top of the most common
        bit width), ``llama_cpp_tensor_type`` (``llama-quantize --tensor-type`` arguments, Llama names,
        Q2_K/Q3_K/Q4_K), ``hqq_modules`` (per-module ``BaseQuantizeConfig`` arguments), and
        ``torchao_fqn`` (FQN -> ``IntxWeightOnlyConfig`` arguments).
    """
    from collections import Counter

    base = Counter(plan.modules.values()).most_common(1)[0][0] if plan.modules else 4
    dynamic = {f"+:^{re.escape(k)}$": {"bits": b} for k, b in plan.modules.items() if b != base}
    tt = []
    for k, b in plan.modules.items():
        m = re.match(r"^model\.layers\.(\d+)\.(.+)$", k)
        if m and m.group(2) in _GGUF and b in (2, 3, 4, 5, 6):
            tt.append(f"--tensor-type blk.{m.group(1)}.{_GGUF[m.group(2)]}=q{b}_k")
    return {
        "gptqmodel_dynamic": {"bits": base, "group_size": plan.group_size, "dynamic": dynamic},
        "llama_cpp_tensor_type": tt,
        "hqq_modules": {k: {"nbits": b, "group_size": plan.group_size} for k, b in plan.modules.items()},
        "torchao_fqn": {k: {"weight_dtype": f"torch.int{b}", "granularity": f"PerGroup({plan.group_size})"}
                        for k, b in plan.modules.items()},
    }


@torch.no_grad()
def export_packed(model: nn.Module, plan: BitPlan, path: str | Path, backend: Backend | None = None,
                  hessians: dict[str, torch.Tensor] | None = None) -> Path:
    """Quantize the planned modules and save their codes, scales and zeros (safetensors).

    Only the quantized linears are stored (``<fqn>.codes`` uint8, ``<fqn>.scale``/``.zero`` float16);
    the plan travels in the metadata. Reload with :func:`load_packed` onto the float model.
    """
    be = backend or get_backend(plan.backend, plan.group_size)
    tensors: dict[str, torch.Tensor] = {}
    for k, m in _resolve(model, plan).items():
        q = be.quantize_codes(m.weight.data, plan.modules[k], (hessians or {}).get(k))
        tensors[f"{k}.codes"] = q.codes
        tensors[f"{k}.scale"] = q.scale.half()
        tensors[f"{k}.zero"] = q.zero.to(torch.uint8)
    return save_tensors(path, tensors, {"plan": plan.to_dict()})


@torch.no_grad()
def load_packed(model: nn.Module, path: str | Path) -> BitPlan:
    """Load a :func:`export_packed` file into ``model`` (weights replaced by their dequantized values)."""
    tensors, meta = load_tensors(path)
    if "plan" not in meta:
        raise UserError(f"{str(path)!r} is not a trustlab packed export (no plan metadata)", "re-export it")
    plan = BitPlan.from_dict(json.loads(meta["plan"]), source=str(path))
    for k, m in _resolve(model, plan).items():
        try:
            codes, scale, zero = tensors[f"{k}.codes"], tensors[f"{k}.scale"], tensors[f"{k}.zero"]
        except KeyError as exc:
            raise UserError(f"{str(path)!r} lacks tensors for {k!r}", "re-export it") from exc
        gs = codes.shape[1] // scale.shape[1]
        m.weight.data.copy_(dequantize(codes, scale.float(), zero.float(), gs).to(m.weight.dtype))
    return plan
