"""One interface, four weight-only quantization backends: ``rtn``, ``gptq``, ``hqq``, ``quanto``.

Every backend maps a float ``nn.Linear`` weight to a *simulated-quantized* float weight (the exact
values the backend's kernels would compute with), so a bit plan can be applied by swapping weights
in place and evaluated identically across backends:

- ``rtn``: our round-to-nearest (min-max, group-wise asymmetric); the reference and SPQE's inner loop.
- ``gptq``: our GPTQ in plain torch (:func:`trustlab.compression.quant.gptq_quantize`); needs the
  layer's input Hessian from calibration data.
- ``hqq``: Half-Quadratic Quantization (``hqq`` package, ``HQQLinear``), calibration-free.
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
        """Integer codes + scales/zeros (only backends with our packed format: ``rtn``, ``gptq``)."""
        raise UserError(f"backend {self.name!r} has no packed export", "export with backend rtn or gptq")


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
    """HQQ (Badri & Shaji 2023) through ``hqq.core.quantize.HQQLinear`` on CPU, float32 compute."""

    name = "hqq"
    supported_bits = (1, 2, 3, 4, 8)

    def quantize_weight(self, weight: torch.Tensor, bits: int, hessian: torch.Tensor | None = None) -> torch.Tensor:
        gs = self.check(bits, weight.shape[1])
        require("hqq", "llm")
        from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

        lin = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        lin.weight.data = weight.detach().float().clone()
        h = HQQLinear(lin, quant_config=BaseQuantizeConfig(nbits=int(bits), group_size=gs),
                      compute_dtype=torch.float32, device="cpu", del_orig=True)
        return h.dequantize().reshape(weight.shape).float().detach().clone()


class QuantoBackend(Backend):
    """``optimum-quanto`` ``qint2``/``qint4`` weights (per-group min-max), dequantized."""

    name = "quanto"
    supported_bits = (2, 4, 8)

    def quantize_weight(self, weight: torch.Tensor, bits: int, hessian: torch.Tensor | None = None) -> torch.Tensor:
        gs = self.check(bits, weight.shape[1])
        require("optimum.quanto", "llm")
        from optimum.quanto import freeze, qint2, qint4, qint8, quantize

        qtype = {2: qint2, 4: qint4, 8: qint8}[int(bits)]
        lin = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        lin.weight.data = weight.detach().float().clone()
        wrapper = torch.nn.Sequential(lin)
        quantize(wrapper, weights=qtype)
        if bits in (2, 4):
            wrapper[0].weight_group_size = gs
        freeze(wrapper)
        return wrapper[0].weight.dequantize().reshape(weight.shape).float().detach().clone()


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
