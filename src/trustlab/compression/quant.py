"""Weight-only group-wise quantization maths: round-to-nearest (RTN) and GPTQ, in plain torch.

Conventions: a weight matrix ``W`` has shape ``(out_features, in_features)`` (``nn.Linear``); groups
of ``group_size`` consecutive *input* columns share one asymmetric (scale, zero) pair per output row.
Codes are integers in ``[0, 2**bits - 1]`` and ``W ~= (codes - zero) * scale``.

References:
    Frantar, Ashkboos, Hoefler, Alistarh. GPTQ: Accurate Post-Training Quantization for Generative
    Pre-trained Transformers. ICLR 2023 (arXiv:2210.17323).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class QuantizedWeight:
    """Integer codes with their per-group scales and zeros.

    Attributes:
        codes: ``(out, in)`` uint8 codes.
        scale: ``(out, n_groups)`` float scales.
        zero: ``(out, n_groups)`` float zero points (integers stored as floats).
        bits: Bit width.
        group_size: Columns per group.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    group_size: int

    def dequantize(self) -> torch.Tensor:
        """The float weight ``(codes - zero) * scale`` (float32)."""
        return dequantize(self.codes, self.scale, self.zero, self.group_size)


def check_bits_group(bits: int, group_size: int, in_features: int) -> int:
    """Validate ``bits``/``group_size`` and return the effective group size.

    ``group_size <= 0`` means one group per row. A group size that does not divide
    ``in_features`` raises (silently changing it would corrupt the memory accounting).

    Raises:
        ValueError: bits outside 1..8 or a group size that does not divide ``in_features``.
    """
    if not 1 <= int(bits) <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    gs = in_features if group_size <= 0 else int(group_size)
    if in_features % gs:
        raise ValueError(f"group_size={gs} does not divide in_features={in_features}")
    return gs


def minmax_params(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric min-max (scale, zero) along the last dimension of ``w`` (``(..., g)`` -> ``(...,)``)."""
    qmax = 2**bits - 1
    lo = w.amin(dim=-1).clamp(max=0.0)
    hi = w.amax(dim=-1).clamp(min=0.0)
    scale = ((hi - lo) / qmax).clamp(min=1e-8)
    zero = torch.round(-lo / scale).clamp(0, qmax)
    return scale, zero


def quantize_with(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes of ``w`` for broadcastable ``scale``/``zero``."""
    return torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> torch.Tensor:
    """Float weight from group-wise codes (``scale``/``zero`` are ``(out, n_groups)``)."""
    out, inf = codes.shape
    c = codes.float().view(out, inf // group_size, group_size)
    return ((c - zero.float().unsqueeze(-1)) * scale.float().unsqueeze(-1)).reshape(out, inf)


def rtn_quantize(weight: torch.Tensor, bits: int, group_size: int) -> QuantizedWeight:
    """Round-to-nearest group-wise asymmetric quantization.

    Args:
        weight: ``(out, in)`` weight.
        bits: Bit width (1..8).
        group_size: Columns per group (``<= 0``: one group per row).
    """
    w = weight.detach().float()
    out, inf = w.shape
    gs = check_bits_group(bits, group_size, inf)
    wg = w.view(out, inf // gs, gs)
    scale, zero = minmax_params(wg, bits)
    codes = quantize_with(wg, scale.unsqueeze(-1), zero.unsqueeze(-1), bits).view(out, inf)
    return QuantizedWeight(codes.to(torch.uint8), scale, zero, int(bits), gs)


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group_size: int,
    damp: float = 0.01,
    block_size: int = 128,
) -> QuantizedWeight:
    """GPTQ: quantize columns left to right, spreading each column's error over the later columns.

    With ``H = 2 X Xᵀ`` (inputs ``X`` of the layer on calibration data), GPTQ takes the upper
    Cholesky factor ``U`` of ``H⁻¹``; after quantizing column ``j`` it updates the remaining columns
    by ``-(w_j - q_j) / U_jj * U_j,j:`` (optimal brain surgeon update), in lazy blocks of
    ``block_size`` columns. Group (scale, zero) pairs are fitted on the *updated* weights when a
    group starts (the reference implementation's ``static_groups=False`` behaviour).

    Args:
        weight: ``(out, in)`` weight.
        hessian: ``(in, in)`` proxy Hessian ``X Xᵀ`` (any positive scaling).
        bits: Bit width.
        group_size: Columns per group (``<= 0``: one group per row).
        damp: Dampening, as a fraction of the mean Hessian diagonal, added to the diagonal.
        block_size: Lazy-update block width (rounded to a multiple of the group size).

    Returns:
        Codes, scales and zeros; ``.dequantize()`` gives the GPTQ weight.

    Raises:
        ValueError: bad shapes or hyper-parameters.
    """
    if not 0.0 <= damp < 1.0:
        raise ValueError(f"damp must be in [0, 1), got {damp}")
    w = weight.detach().float().clone()
    out, inf = w.shape
    gs = check_bits_group(bits, group_size, inf)
    if hessian.shape != (inf, inf):
        raise ValueError(f"hessian shape {tuple(hessian.shape)} does not match in_features={inf}")
    h = hessian.detach().double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(inf, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()
    bs = max(gs, (block_size // gs) * gs)
    codes = torch.zeros(out, inf)
    scales = torch.zeros(out, inf // gs)
    zeros = torch.zeros(out, inf // gs)
    for i1 in range(0, inf, bs):
        i2 = min(i1 + bs, inf)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        scale = zero = None
        for i in range(i2 - i1):
            col = i1 + i
            if col % gs == 0:
                scale, zero = minmax_params(w1[:, i : i + gs], bits)
                scales[:, col // gs] = scale
                zeros[:, col // gs] = zero
            assert scale is not None and zero is not None
            wc = w1[:, i]
            q = quantize_with(wc, scale, zero, bits)
            codes[:, col] = q
            dq = (q - zero) * scale
            e = (wc - dq) / hinv1[i, i]
            w1[:, i:] -= e.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return QuantizedWeight(codes.to(torch.uint8), scales, zeros, int(bits), gs)


def output_error(weight: torch.Tensor, weight_q: torch.Tensor, x: torch.Tensor) -> float:
    """Relative output error ``||x Wᵀ - x Ŵᵀ||_F / ||x Wᵀ||_F`` of a quantized linear layer."""
    ref = x.float() @ weight.float().T
    return float((ref - x.float() @ weight_q.float().T).norm() / ref.norm().clamp(min=1e-12))
