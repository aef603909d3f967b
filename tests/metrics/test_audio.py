"""SI-SNR / SDR / PIT metrics cross-checked against torchmetrics."""

from __future__ import annotations

import pytest
import torch

from trustlab.metrics.audio import pit_permutation, pit_si_snr_loss, sdr, sdri, si_snr, si_snri, snr

tm = pytest.importorskip("torchmetrics.functional.audio")


def _signals(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(4, 2, 800, generator=g)
    est = target + 0.3 * torch.randn(4, 2, 800, generator=g)
    return est, target


def test_si_snr_matches_torchmetrics() -> None:
    est, tgt = _signals()
    ref = tm.scale_invariant_signal_noise_ratio(est, tgt)
    assert torch.allclose(si_snr(est, tgt), ref, atol=1e-4)
    assert torch.allclose(si_snr(est, tgt), tm.scale_invariant_signal_distortion_ratio(est, tgt, zero_mean=True),
                          atol=1e-4)


def test_snr_matches_torchmetrics() -> None:
    est, tgt = _signals(1)
    assert torch.allclose(snr(est, tgt), tm.signal_noise_ratio(est, tgt, zero_mean=False), atol=1e-4)


def test_bss_sdr_matches_torchmetrics() -> None:
    est, tgt = _signals(5)
    ref = tm.signal_distortion_ratio(est, tgt, filter_length=64)
    assert torch.allclose(sdr(est, tgt, filter_length=64), ref, atol=1e-3)
    # a pure gain or a short FIR filter of the target is not distortion
    filt = torch.nn.functional.conv1d(tgt.reshape(-1, 1, 800), torch.tensor([[[0.2, 0.5, 1.0]]]), padding=2)[..., :800]
    assert (sdr(filt.reshape(4, 2, 800), tgt, filter_length=64) > 30).all()
    assert (sdr(0.01 * tgt + 1e-3 * torch.randn(4, 2, 800, generator=torch.Generator().manual_seed(0)), tgt,
                filter_length=64) > 10).all()


def test_bss_sdr_survives_silent_targets() -> None:
    est, tgt = _signals(6)
    tgt[0, 1] = 0.0
    out = sdr(est, tgt, filter_length=32)
    assert torch.isfinite(out).all() and out[0, 1] < -50 and (out[1:] > 5).all()


def test_si_snr_is_scale_invariant_and_shape_checked() -> None:
    est, tgt = _signals(2)
    assert torch.allclose(si_snr(3.7 * est, tgt), si_snr(est, tgt), atol=1e-4)
    with pytest.raises(ValueError):
        si_snr(est[..., :10], tgt)


def test_pit_matches_torchmetrics_and_finds_the_swap() -> None:
    est, tgt = _signals(3)
    swapped = est.flip(1)
    best, perm = pit_permutation(swapped, tgt)
    ref_best, ref_perm = tm.permutation_invariant_training(
        swapped, tgt, tm.scale_invariant_signal_noise_ratio, mode="speaker-wise", eval_func="max")
    assert torch.allclose(best.mean(-1), ref_best, atol=1e-4)
    assert torch.equal(perm, torch.tensor([[1, 0]] * 4))
    assert torch.equal(perm, ref_perm)
    assert torch.isclose(pit_si_snr_loss(swapped, tgt), -ref_best.mean(), atol=1e-4)


def test_improvements_are_relative_to_the_mixture() -> None:
    est, tgt = _signals(4)
    mix = tgt.sum(1)
    # Returning the mixture for both sources gives exactly 0 dB improvement.
    same = mix.unsqueeze(1).expand_as(tgt)
    assert torch.allclose(si_snri(same, tgt, mix), torch.zeros(4), atol=1e-4)
    assert torch.allclose(sdri(same, tgt, mix, filter_length=64), torch.zeros(4), atol=1e-4)
    assert (si_snri(est, tgt, mix) > 5).all()
    base = tm.scale_invariant_signal_noise_ratio(same, tgt)
    ref = (tm.scale_invariant_signal_noise_ratio(est, tgt) - base).mean(-1)
    assert torch.allclose(si_snri(est, tgt, mix), ref, atol=1e-4)
