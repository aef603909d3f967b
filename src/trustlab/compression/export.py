"""Checkpoints that load without trustlab: compressed-tensors folders and GGUF files, bits per module.

Both writers take the integer codes of every planned linear (:class:`QuantizedWeight`, from any backend's
``quantize_codes``), first turn them into exactly what the format stores (:func:`stored_codes`), so that the
caller can evaluate the very weights a stock loader will rebuild, and then write:

- ``compressed-tensors``: a Hugging Face folder (``config.json`` with a ``quantization_config`` of
  ``quant_method: compressed-tensors``, format ``pack-quantized``, one config group per bit width whose
  targets are the module names; ``model.safetensors`` with ``weight_packed`` (int32 words, ``bits`` per
  weight), ``weight_scale`` (float16), ``weight_zero_point`` and ``weight_shape``; embeddings, norms and
  ``lm_head`` stay float). ``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` loads it with the
  ``compressed-tensors`` package installed. The format has integer zero points: fractional ones (HQQ,
  Quanto) are rounded and the codes re-fitted to the float weight with the backend's scale.
  Layout note: compressed-tensors packs asymmetric zero points along the output dimension
  (``ceil(out * bits / 32)`` rows), but transformers 5.24 + compressed-tensors 0.20 allocate the
  *unpacked* shape ``(out, n_groups)`` when loading and refuse the packed one. The writer therefore
  stores the packed words in the first rows of an ``(out, n_groups)`` int32 tensor (zeros after them);
  the decompressor reads only the rows it needs, so the weights are exact, at 32 bits per group for the
  zero point instead of ``bits``.
- ``gguf``: a llama.cpp GGUF file (architecture ``llama``) with one quantization type per tensor:
  4-bit linears as ``Q4_1`` (blocks of 32: float16 scale and minimum, the backend's codes exactly;
  needs ``group_size=32``), 2-bit linears as ``Q2_K`` (super-blocks of 256 weights, 16-weight
  sub-blocks with 4-bit scales and minimums, llama.cpp's layout; fitted here by min-max per sub-block,
  so the backend is not used for them; needs input widths divisible by 256), float tensors as ``F32``.
  ``transformers`` dequantizes both types when loading
  (``from_pretrained(folder, gguf_file=name)``); llama.cpp runs them natively.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trustlab.compression.quant import QuantizedWeight, quantize_with
from trustlab.errors import UserError, require
from trustlab.utils.io import atomic_write_text
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

FORMATS = ("compressed-tensors", "gguf")
#: bit widths each format stores packed
FORMAT_BITS = {"compressed-tensors": (2, 3, 4, 8), "gguf": (2, 4)}
Q2K_BLOCK = 256


@dataclass
class StoredWeight:
    """A linear as the format stores it.

    Attributes:
        weight: The float weight a stock loader rebuilds (float32, ``(out, in)``).
        bits: Bit width.
        qtype: Format-specific type (``int{b}-g{gs}``, ``Q4_1``, ``Q2_K``).
        payload: What the writer needs (codes, scales...).
        code_bytes: Bytes of the packed codes alone.
    """

    weight: torch.Tensor
    bits: int
    qtype: str
    payload: dict[str, Any]
    code_bytes: int


def check_format(fmt: str, bits: set[int], in_features: list[int], group_size: int) -> None:
    """Raise a :class:`UserError` when ``fmt`` cannot store these bit widths / shapes."""
    if fmt not in FORMATS:
        import difflib

        close = difflib.get_close_matches(fmt, FORMATS, n=1)
        raise UserError(f"unknown checkpoint format {fmt!r}",
                        f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(FORMATS)}")
    bad = sorted(b for b in bits if b not in FORMAT_BITS[fmt])
    if bad:
        raise UserError(f"format {fmt} cannot store {bad[0]}-bit weights packed",
                        f"use bits in {FORMAT_BITS[fmt]} or --format compressed-tensors")
    if fmt == "gguf":
        if 4 in bits and group_size != 32:
            raise UserError(f"gguf stores 4-bit weights as Q4_1 with groups of 32, not {group_size}",
                            "pass --group-size 32 with --format gguf")
        if 2 in bits and any(f % Q2K_BLOCK for f in in_features):
            raise UserError(f"gguf stores 2-bit weights as Q2_K, which needs input widths divisible by {Q2K_BLOCK} "
                            f"(this model has {sorted(set(in_features))})", "use --format compressed-tensors")


def _int_zero(weight: torch.Tensor, q: QuantizedWeight) -> QuantizedWeight:
    """The same scales with integer zero points (codes re-fitted to ``weight``)."""
    if torch.equal(q.zero, q.zero.round()):
        return q
    qmax = 2**q.bits - 1
    out, inf = weight.shape
    gs = q.group_size
    scale = q.scale.float()
    zero = q.zero.round().clamp(0, qmax)
    w = weight.detach().float().view(out, inf // gs, gs)
    codes = quantize_with(w, scale.unsqueeze(-1), zero.unsqueeze(-1), q.bits).view(out, inf)
    return QuantizedWeight(codes.to(torch.uint8), scale, zero, q.bits, gs)


def _q2k_fit(weight: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """Q2_K blocks (uint8 ``(out, in/256*84)``) of ``weight`` and the weight they dequantize to."""
    w = weight.detach().double()
    out, inf = w.shape
    sub = w.view(out, inf // Q2K_BLOCK, 16, 16)
    lo = sub.amin(-1).clamp(max=0.0)
    hi = sub.amax(-1).clamp(min=0.0)
    sc = (hi - lo) / 3.0  # per sub-block scale
    mn = -lo  # per sub-block minimum (>= 0), W = sc * q - mn
    d = (sc.amax(-1) / 15.0).half().double()
    dmin = (mn.amax(-1) / 15.0).half().double()
    sc_q = torch.where(d[..., None] > 0, torch.round(sc / d[..., None].clamp(min=1e-30)), 0).clamp(0, 15)
    m_q = torch.where(dmin[..., None] > 0, torch.round(mn / dmin[..., None].clamp(min=1e-30)), 0).clamp(0, 15)
    dl = d[..., None] * sc_q
    ml = dmin[..., None] * m_q
    codes = torch.where(dl[..., None] > 0, torch.round((sub + ml[..., None]) / dl[..., None].clamp(min=1e-30)), 0)
    codes = codes.clamp(0, 3)
    deq = (dl[..., None] * codes - ml[..., None]).float().reshape(out, inf)
    # pack (llama.cpp block_q2_K): scales[16] (low nibble scale, high nibble min), qs[64], d, dmin
    nb = out * (inf // Q2K_BLOCK)
    c = codes.to(torch.uint8).reshape(nb, 2, 4, 32).numpy()  # element = 128*h + 32*s + l
    qs = (c[:, :, 0] | (c[:, :, 1] << 2) | (c[:, :, 2] << 4) | (c[:, :, 3] << 6)).reshape(nb, 64)
    scales = (sc_q.to(torch.uint8) | (m_q.to(torch.uint8) << 4)).reshape(nb, 16).numpy()
    dd = d.reshape(nb, 1).numpy().astype(np.float16).view(np.uint8)
    dm = dmin.reshape(nb, 1).numpy().astype(np.float16).view(np.uint8)
    blocks = np.concatenate([scales, qs.astype(np.uint8), dd, dm], axis=-1)
    return blocks.reshape(out, -1), deq


def stored_codes(weight: torch.Tensor, q: QuantizedWeight, fmt: str) -> StoredWeight:
    """What ``fmt`` stores for a linear with float ``weight`` and backend codes ``q``."""
    out, inf = weight.shape
    if fmt == "compressed-tensors":
        qi = _int_zero(weight, q)
        scale16 = qi.scale.half()
        gs = qi.group_size
        deq = ((qi.codes.float().view(out, inf // gs, gs) - qi.zero.unsqueeze(-1)) * scale16.float().unsqueeze(-1))
        return StoredWeight(deq.reshape(out, inf), qi.bits, f"int{qi.bits}-g{gs}",
                            {"q": qi, "scale16": scale16}, math.ceil(inf * qi.bits / 32) * 4 * out)
    if fmt == "gguf":
        if q.bits == 4:
            gs = q.group_size
            d16 = q.scale.half()
            m16 = (-q.zero * q.scale).half()
            deq = q.codes.float().view(out, inf // gs, gs) * d16.float().unsqueeze(-1) + m16.float().unsqueeze(-1)
            return StoredWeight(deq.reshape(out, inf), 4, "Q4_1", {"codes": q.codes, "d": d16, "m": m16},
                                out * inf // 2)
        if q.bits == 2:
            blocks, deq = _q2k_fit(weight)
            return StoredWeight(deq, 2, "Q2_K", {"blocks": blocks}, out * inf // 4)
    raise UserError(f"format {fmt} cannot store {q.bits}-bit weights", f"use bits in {FORMAT_BITS.get(fmt)}")


# ---- compressed-tensors ------------------------------------------------------------------------------------
def write_compressed_tensors(model: nn.Module, stored: dict[str, StoredWeight], out_dir: Path,
                             tokenizer: Any = None) -> dict[str, int]:
    """Write a compressed-tensors ``pack-quantized`` folder; returns byte counts of the quantized tensors."""
    require("compressed_tensors", "quant")
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme

    from trustlab.utils.io import save_tensors

    out_dir.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        sd.pop("lm_head.weight", None)  # tied to the embedding: transformers re-ties it on load
    seen: dict[int, str] = {}
    for k in list(sd):  # any other shared storage is saved once (safetensors refuses aliases)
        ptr = sd[k].data_ptr()
        if ptr in seen and sd[k].numel() > 0:
            sd.pop(k)
        seen.setdefault(ptr, k)
    by_scheme: dict[tuple[int, int], list[str]] = {}
    code_bytes = total_bytes = 0
    for name, st in stored.items():
        q: QuantizedWeight = st.payload["q"]
        off = 2 ** (q.bits - 1)  # compressed-tensors' int codes are signed: [-2^(b-1), 2^(b-1) - 1]
        packed = pack_to_int32((q.codes.to(torch.int16) - off).to(torch.int8), q.bits)
        zp_packed = pack_to_int32((q.zero.to(torch.int16) - off).to(torch.int8), q.bits, packed_dim=0)
        zp = torch.zeros(q.zero.shape, dtype=torch.int32)
        zp[: zp_packed.shape[0]] = zp_packed  # see the module docstring (layout note)
        sd.pop(f"{name}.weight")
        sd[f"{name}.weight_packed"] = packed.contiguous()
        sd[f"{name}.weight_scale"] = st.payload["scale16"].contiguous()
        sd[f"{name}.weight_zero_point"] = zp
        sd[f"{name}.weight_shape"] = torch.tensor(list(st.weight.shape))
        by_scheme.setdefault((q.bits, q.group_size), []).append(name)
        code_bytes += packed.numel() * 4
        total_bytes += packed.numel() * 4 + st.payload["scale16"].numel() * 2 + zp.numel() * 4 + 16
    groups = {}
    for i, ((bits, gs), names) in enumerate(sorted(by_scheme.items())):
        groups[f"group_{i}"] = QuantizationScheme(
            targets=["re:^" + n.replace(".", r"\.") + "$" for n in names],
            weights=QuantizationArgs(num_bits=bits, type="int", symmetric=False, strategy="group", group_size=gs))
    qc = QuantizationConfig(config_groups=groups, format="pack-quantized", quantization_status="compressed")
    cfg = model.config.to_dict()
    cfg["quantization_config"] = qc.to_dict()
    cfg["dtype"] = "float32"
    save_tensors(out_dir / "model.safetensors", sd)
    atomic_write_text(out_dir / "config.json", json.dumps(cfg, indent=2, default=str))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out_dir))
    return {"code_bytes": code_bytes, "quantized_tensor_bytes": total_bytes}


# ---- GGUF -------------------------------------------------------------------------------------------------
_GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def _gguf_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    parts = hf.split(".")
    if len(parts) >= 5 and parts[0] == "model" and parts[1] == "layers":
        sub = ".".join(parts[3:-1])
        if sub in _GGUF_NAMES:
            return f"blk.{parts[2]}.{_GGUF_NAMES[sub]}.{parts[-1]}"
    raise UserError(f"gguf export: no llama.cpp name for tensor {hf!r}", "use --format compressed-tensors")


def _permute_rows(x: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row permutation (``convert_hf_to_gguf``), undone by every GGUF loader."""
    return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def write_gguf(model: nn.Module, stored: dict[str, StoredWeight], path: Path) -> dict[str, int]:
    """Write a llama GGUF file with per-tensor quantization types; returns byte counts."""
    require("gguf", "llm")
    import gguf

    cfg = model.config
    if getattr(cfg, "model_type", "") != "llama":
        raise UserError(f"gguf export supports Llama-architecture models, not {cfg.model_type!r}",
                        "use --format compressed-tensors")
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_context_length(int(cfg.max_position_embeddings))
    w.add_embedding_length(int(cfg.hidden_size))
    w.add_block_count(int(cfg.num_hidden_layers))
    w.add_feed_forward_length(int(cfg.intermediate_size))
    w.add_head_count(int(n_head))
    w.add_head_count_kv(int(n_kv))
    w.add_rope_dimension_count(int(head_dim))
    w.add_rope_freq_base(float(getattr(cfg, "rope_theta", None) or (cfg.rope_parameters or {}).get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(int(cfg.vocab_size))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    code_bytes = total_bytes = 0
    for hf, t in model.state_dict().items():
        name = _gguf_name(hf)
        mod = hf[: -len(".weight")] if hf.endswith(".weight") else None
        heads = n_head if ".attn_q." in name else n_kv if ".attn_k." in name else None
        if mod in stored:
            st = stored[mod]
            if st.qtype == "Q4_1":
                codes = st.payload["codes"].numpy().astype(np.uint8)
                out, inf = codes.shape
                c = codes.reshape(out, inf // 32, 2, 16)
                qs = c[:, :, 0] | (c[:, :, 1] << 4)
                d = st.payload["d"].numpy().astype(np.float16).reshape(out, inf // 32, 1).view(np.uint8)
                m = st.payload["m"].numpy().astype(np.float16).reshape(out, inf // 32, 1).view(np.uint8)
                raw = np.concatenate([d, m, qs], axis=-1).reshape(out, -1)
                qtype = gguf.GGMLQuantizationType.Q4_1
            else:
                raw = st.payload["blocks"]
                qtype = gguf.GGMLQuantizationType.Q2_K
            if heads is not None:  # permuting whole rows keeps every block intact
                raw = _permute_rows(raw, heads)
            raw = np.ascontiguousarray(raw)
            w.add_tensor(name, raw, raw_dtype=qtype)
            code_bytes += st.code_bytes
            total_bytes += raw.nbytes
        else:
            arr = t.detach().float().numpy()
            if heads is not None:
                arr = _permute_rows(arr, heads)
            w.add_tensor(name, np.ascontiguousarray(arr), raw_dtype=gguf.GGMLQuantizationType.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(path)
    return {"code_bytes": code_bytes, "quantized_tensor_bytes": total_bytes}
