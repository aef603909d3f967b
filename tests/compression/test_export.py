"""Checkpoint writers: what they store decodes, with the formats' own libraries, to the weights we evaluate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trustlab.compression.backends import get_backend
from trustlab.compression.export import check_format, stored_codes
from trustlab.errors import UserError


def _w(out: int = 8, inf: int = 256) -> torch.Tensor:
    return torch.randn(out, inf, generator=torch.Generator().manual_seed(0))


def test_q2k_and_q4_1_blocks_decode_with_gguf_to_the_evaluated_weights() -> None:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    w = _w()
    q2 = stored_codes(w, get_backend("rtn", 32).quantize_codes(w, 2), "gguf")
    got = dequantize(q2.payload["blocks"], GGMLQuantizationType.Q2_K)
    assert np.allclose(got, q2.weight.numpy(), atol=1e-6)
    assert q2.payload["blocks"].nbytes == w.numel() // 256 * 84  # 2.625 bits per weight
    q4 = stored_codes(w, get_backend("hqq", 32).quantize_codes(w, 4), "gguf")
    c = q4.payload["codes"].numpy().reshape(8, -1, 2, 16)
    d = q4.payload["d"].numpy().astype(np.float16).reshape(8, -1, 1).view(np.uint8)
    m = q4.payload["m"].numpy().astype(np.float16).reshape(8, -1, 1).view(np.uint8)
    raw = np.concatenate([d, m, c[:, :, 0] | (c[:, :, 1] << 4)], axis=-1).reshape(8, -1)
    assert np.allclose(dequantize(raw, GGMLQuantizationType.Q4_1), q4.weight.numpy(), atol=1e-6)
    # Q2_K is a real 2-bit quantizer: error between 4-bit and nothing
    e2, e4 = float((w - q2.weight).norm()), float((w - q4.weight).norm())
    assert e4 < e2 < float(w.norm())


@pytest.mark.parametrize("backend", ["rtn", "hqq", "quanto"])
def test_compressed_tensors_codes_decode_with_compressed_tensors(backend) -> None:  # noqa: ANN001
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    w = _w(16, 64)
    for bits in (2, 4):
        st = stored_codes(w, get_backend(backend, 32).quantize_codes(w, bits), "compressed-tensors")
        q = st.payload["q"]
        assert torch.equal(q.zero, q.zero.round())  # integer zero points
        off = 2 ** (bits - 1)
        scheme = QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(
            num_bits=bits, type="int", symmetric=False, strategy="group", group_size=32))
        sd = {"weight_packed": pack_to_int32((q.codes.to(torch.int16) - off).to(torch.int8), bits),
              "weight_scale": st.payload["scale16"],
              "weight_zero_point": pack_to_int32((q.zero.to(torch.int16) - off).to(torch.int8), bits, packed_dim=0),
              "weight_shape": torch.tensor(list(w.shape))}
        got = PackedQuantizationCompressor.decompress(sd, scheme)["weight"].float()
        assert torch.allclose(got, st.weight, atol=1e-3 * float(w.abs().max()))
        # the re-fitted integer-zero weights stay close to the backend's own (fractional-zero) weights
        ref = get_backend(backend, 32).quantize_weight(w, bits)
        assert float((st.weight - w).norm()) < 1.2 * float((ref - w).norm())


def test_format_checks() -> None:
    with pytest.raises(UserError, match="Q4_1 with groups of 32"):
        check_format("gguf", {4}, [256], 64)
    with pytest.raises(UserError, match="divisible by 256"):
        check_format("gguf", {2}, [64], 32)
    with pytest.raises(UserError, match="cannot store 3-bit"):
        check_format("gguf", {3}, [256], 32)
    check_format("compressed-tensors", {2, 3, 4}, [64], 32)
