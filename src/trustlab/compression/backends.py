"""One interface, four weight-only quantization backends: ``rtn``, ``gptq``, ``hqq``, ``quanto``.

Every backend maps a float ``nn.Linear`` weight to a *simulated-quantized* float weight (the exact
values the backend's kernels would compute with), so a bit plan can be applied by swapping weights
in place and evaluated identically across backends:

- ``rtn``: our round-to-nearest (min-max, group-wise asymmetric); the reference and SPQE's inner loop.
- ``gptq``: our GPTQ in plain torch (:func:`trustlab.compression.quant.gptq_quantize`); needs the
  layer's input Hessian from calibration data.
- ``hqq``: Half-Quadratic Quantization (``hqq`` package, ``HQQLinear``), calibration-free; float zero points.
- ``quanto``: ``optimum-quanto`` ``qint2``/``qint4`` weights (min-max per group), calibration-free.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from trustlab.compression.quant import QuantizedWeight, check_bits_group, gptq_quantize, rtn_quantize
from trustlab.errors import UserError, require

BACKENDS = ("rtn", "gptq", "hqq", "quanto")


class Backend(ABC):
    """A weight-only quantizer for ``nn.Linear`` weights.

    Args:
        group_size: Input columns per (scale, zero) group; ``<= 0`` for one group per row.
    """

    name: ClassVar[str] = ""
    needs_hessian: ClassVar[bool] = False
    supported_bits: ClassVar[tuple[int, ...]] = (2, 3, 4, 8)

    def __init__(self, group_size: int = 32) -> None:
        if not isinstance(group_size, int):
            raise ValueError(f"group_size must be an int, got {group_size!r}")
        self.group_size = group_size

    def check(self, bits: int, in_features: int) -> int:
        """Validate bits for this backend; returns the effective group size."""
        if bits not in self.supported_bits:
            raise UserError(f"backend {self.name!r} does not support {bits}-bit weights",
                            f"use one of {self.supported_bits}")
        return check_bits_group(bits, self.group_size, in_features)

    @abstractmethod
    def quantize_weight(self, weight: torch.Tensor, bits: int, hessian: torch.Tensor | None = None) -> torch.Tensor:
        """The simulated-quantized float32 weight (same shape as ``weight``)."""

    def quantize_codes(self, weight: torch.Tensor, bits: int, hessian: torch.Tensor | None = None) -> QuantizedWeight:
        """Integer codes + per-group scales/zeros with ``W ~= (codes - zero) * scale`` (zeros may be fractional)."""
        raise UserError(f"backend {self.name!r} has no integer codes", "use backend rtn, gptq, hqq or quanto")


class RTNBackend(Backend):
    """Round-to-nearest min-max quantization (reference)."""

    name = "rtn"
    supported_bits = (1, 2, 3, 4, 5, 6, 7, 8)

    def quantize_codes(self, weight: torch.Tensor, bits: int, hessian: torch.Tensor | None = None) -> QuantizedWeight:
        self.check(bits, weight.shape[1])
        return rtn_quantize(weight, bits, self.group_size)

    def quantize_weight(self, weight: torch.Tensor, bits: int, hessian: torch.Tensor | None = None) -> torch.Tensor:
        return self.quantize_codes(weight, bits).dequantize()


class GPTQBackend(Backend):
    """Our GPTQ (Frantar et al., ICLR 2023) in plain torch.

    Args:
        group_size: Columns per group.
        damp: Hessian dampening (fraction of the mean diagonal).
        block_size: Lazy-update block width.
    """

    name = "gptq"
    needs_hessian = True
    supported_bits = (1, 2, 3, 4, 5, 6, 7, 8)

    def __init__(self, group_size: int = 32, damp: float = 0.01, block_size: int = 128) -> None:
        super().__init__(group_size)
        if not 0.0 <= damp < 1.0:
            raise ValueError(f"damp must be in [0, 1), got {damp}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.damp = damp
        self.block_size = block_size

    def quantize_codes(self, weight: torch.Tensor, bits: int, hessian: torch.Tensor | None = None) -> QuantizedWeight:
        self.check(bits, weight.shape[1])
        if hessian is None:
            raise ValueError("the gptq backend needs the layer's input Hessian (calibration data)")
        return gptq_quantize(weight, hessian, bits, self.group_size, self.damp, self.block_size)

    def quantize_weight(self, weight: torch.Tensor, bits: int, hessian: torch.Tensor | None = None) -> torch.Tensor:
        return self.quantize_codes(weight, bits, hessian).dequantize()


class HQQBackend(Backend):
    """HQQ (Badri & Shaji 2023) through ``hqq.core.quantize.HQQLinear`` on CPU, float32 compute.

    Groups run along the input columns (``axis=1``, HQQ's default); HQQ fits the (float) zero point of
    every group by half-quadratic optimization, the scale is min-max. :meth:`quantize_codes` returns
    HQQ's integer codes with its float scales and zeros (``W ~= (codes - zero) * scale``).
    """

    name = "hqq"
    supported_bits = (1, 2, 3, 4, 8)

    def quantize_codes(self, weight: torch.Tensor, bits: int, hessian: torch.Tensor | None = None) -> QuantizedWeight:
        gs = self.check(bits, weight.shape[1])
        require("hqq", "quant")
        from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

        out, inf = weight.shape
        lin = torch.nn.Linear(inf, out, bias=False)
        lin.weight.data = weight.detach().float().clone()
        h = HQQLinear(lin, quant_config=BaseQuantizeConfig(nbits=int(bits), group_size=gs, axis=1),
                      compute_dtype=torch.float32, device="cpu", del_orig=True)
        wdq = h.dequantize().reshape(out, inf // gs, gs).float()
        scale = h.meta["scale"].float().reshape(out, inf // gs)
        zero = h.meta["zero"].float().reshape(out, inf // gs)
        codes = torch.round(wdq / scale.unsqueeze(-1) + zero.unsqueeze(-1)).clamp(0, 2**bits - 1)
        return QuantizedWeight(codes.reshape(out, inf).to(torch.uint8), scale, zero, int(bits), gs)

    def quantize_weight(self, weight: torch.Tensor, bits: int, hessian: torch.Tensor | None = None) -> torch.Tensor:
        return self.quantize_codes(weight, bits).dequantize()


class QuantoBackend(Backend):
    """``optimum-quanto`` ``qint2``/``qint4`` weights (per-group min-max), dequantized.

    Quanto picks its own group size when a linear is wrapped (128, lowered in steps of 32 until it divides
    the input width; per-row when the input is not wider than 128); the backend overrides it with
    ``group_size`` before ``freeze()``, which is when Quanto quantizes the weight (see the test
    ``test_quanto_group_size_is_applied``).
    """

    name = "quanto"
    supported_bits = (2, 4, 8)

    def _frozen(self, weight: torch.Tensor, bits: int):  # noqa: ANN202
        gs = self.check(bits, weight.shape[1])
        require("optimum.quanto", "quant")
        from optimum.quanto import freeze, qint2, qint4, qint8, quantize

        qtype = {2: qint2, 4: qint4, 8: qint8}[int(bits)]
        lin = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        lin.weight.data = weight.detach().float().clone()
        wrapper = torch.nn.Sequential(lin)
        quantize(wrapper, weights=qtype)
        if bits in (2, 4):
            wrapper[0].weight_group_size = gs
        freeze(wrapper)
        return wrapper[0].weight, gs

    def quantize_codes(self, weight: torch.Tensor, bits: int, hessian: torch.Tensor | None = None) -> QuantizedWeight:
        if bits == 8:
            raise UserError("quanto's 8-bit weights are symmetric per row, not group-wise codes",
                            "export 2- or 4-bit quanto weights, or use backend rtn for 8 bits")
        qt, gs = self._frozen(weight, bits)
        out, inf = weight.shape
        with torch.no_grad():
            wdq = qt.dequantize().reshape(out, inf // gs, gs).float()
            codes = qt._data.unpack().reshape(out, inf // gs, gs).float()
            scale = qt._scale.float().reshape(out, inf // gs)
        # W = (codes - zero) * scale: the (float) zero point of each group from its codes
        zero = (codes - wdq / scale.unsqueeze(-1)).mean(dim=-1)
        return QuantizedWeight(codes.reshape(out, inf).to(torch.uint8), scale, zero, int(bits), gs)

    def quantize_weight(self, weight: torch.Tensor, bits: int, hessian: torch.Tensor | None = None) -> torch.Tensor:
        qt, _ = self._frozen(weight, bits)
        with torch.no_grad():
            return qt.dequantize().reshape(weight.shape).float().detach().clone()


_REGISTRY: dict[str, type[Backend]] = {"rtn": RTNBackend, "gptq": GPTQBackend, "hqq": HQQBackend,
                                       "quanto": QuantoBackend}


def get_backend(name: str, group_size: int = 32, **kwargs: float) -> Backend:
    """A backend by name.

    Raises:
        UserError: unknown backend name.
    """
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        raise UserError(f"unknown quantization backend {name!r}",
                        f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(BACKENDS)}")
    return _REGISTRY[name](group_size, **kwargs)  # type: ignore[arg-type]


def quantize_linear_copy(linear: torch.nn.Linear, backend: Backend, bits: int,
                         hessian: torch.Tensor | None = None) -> torch.nn.Linear:
    """A copy of ``linear`` whose weight is quantized by ``backend`` (the original is untouched)."""
    new = copy.deepcopy(linear)
    new.weight.data = backend.quantize_weight(linear.weight.data, bits, hessian).to(linear.weight.dtype)
    return new
