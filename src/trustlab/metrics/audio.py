"""Speech-separation metrics: SI-SNR, SDR, their improvements, and permutation-invariant training.

Definitions follow Le Roux et al., *SDR - half-baked or well done?* (ICASSP 2019) for SI-SNR
(= SI-SDR) and BSS-Eval's SDR (Vincent et al. 2006) as reported by Conv-TasNet and SepPrune: the
target may be distorted by a length-512 FIR filter before the residual counts as error (the
``fast_bss_eval`` / ``torchmetrics.signal_distortion_ratio`` formulation). Plain SNR is also given;
note that it is *not* meaningful for models trained with a scale-invariant loss. All are
cross-checked against ``torchmetrics`` in ``tests/metrics/test_audio.py``.

All functions take tensors of shape ``[..., time]`` and reduce over the last axis only.
"""

from __future__ import annotations

import itertools

import torch

EPS = 1e-8


def si_snr(estimate: torch.Tensor, target: torch.Tensor, zero_mean: bool = True, eps: float = EPS) -> torch.Tensor:
    """Scale-invariant signal-to-noise ratio in dB (SI-SDR of Le Roux et al. 2019).

    Args:
        estimate: ``[..., T]`` estimated signal.
        target: ``[..., T]`` reference signal (same shape).
        zero_mean: Remove the mean of both signals first (the usual convention).
        eps: Numerical floor.

    Returns:
        ``[...]`` SI-SNR in dB.
    """
    if estimate.shape != target.shape:
        raise ValueError(f"estimate {tuple(estimate.shape)} and target {tuple(target.shape)} differ in shape")
    if zero_mean:
        estimate = estimate - estimate.mean(dim=-1, keepdim=True)
        target = target - target.mean(dim=-1, keepdim=True)
    alpha = (estimate * target).sum(-1, keepdim=True) / (target.pow(2).sum(-1, keepdim=True) + eps)
    proj = alpha * target
    noise = estimate - proj
    return 10 * torch.log10((proj.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


def snr(estimate: torch.Tensor, target: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Plain SNR in dB, ``10 log10(|s|^2 / |s - s_hat|^2)`` (scale-dependent).

    Args:
        estimate: ``[..., T]`` estimate.
        target: ``[..., T]`` reference.

    Returns:
        ``[...]`` SNR in dB.
    """
    if estimate.shape != target.shape:
        raise ValueError(f"estimate {tuple(estimate.shape)} and target {tuple(target.shape)} differ in shape")
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / ((target - estimate).pow(2).sum(-1) + eps))


def sdr(estimate: torch.Tensor, target: torch.Tensor, filter_length: int = 512, chunk: int = 16,
        load_diag: float = 1e-8) -> torch.Tensor:
    """BSS-Eval SDR in dB with a ``filter_length``-tap distortion filter (as torchmetrics/fast_bss_eval).

    Solves the Toeplitz normal equations of the best FIR filter mapping ``target`` to ``estimate``
    (float64) and returns ``10 log10(c / (1 - c))`` with ``c`` the explained energy fraction.

    Args:
        estimate: ``[..., T]``.
        target: ``[..., T]``.
        filter_length: Distortion filter taps (BSS-Eval default 512).
        chunk: Signals solved at once (bounds memory: ``chunk * filter_length^2`` doubles).
        load_diag: Diagonal loading of the (unit-energy) Toeplitz matrix, so silent or all-zero
            targets stay solvable (they get a very low SDR instead of an error).

    Returns:
        ``[...]`` SDR in dB.
    """
    if estimate.shape != target.shape:
        raise ValueError(f"estimate {tuple(estimate.shape)} and target {tuple(target.shape)} differ in shape")
    shape = estimate.shape[:-1]
    est = estimate.reshape(-1, estimate.shape[-1]).double()
    tgt = target.reshape(-1, target.shape[-1]).double()
    est = est / est.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    tgt = tgt / tgt.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    n = est.shape[-1]
    n_fft = 2 ** int(torch.ceil(torch.log2(torch.tensor(2.0 * n - 1))))
    length = min(filter_length, n)
    idx = (torch.arange(length)[:, None] - torch.arange(length)[None, :]).abs()
    out = []
    for s in range(0, est.shape[0], chunk):
        tf = torch.fft.rfft(tgt[s : s + chunk], n=n_fft)
        ef = torch.fft.rfft(est[s : s + chunk], n=n_fft)
        r = torch.fft.irfft(tf.real.pow(2) + tf.imag.pow(2), n=n_fft)[..., :length]
        r[..., 0] += load_diag
        b = torch.fft.irfft(tf.conj() * ef, n=n_fft)[..., :length]
        # R is a symmetric positive (semi-)definite Toeplitz matrix: Cholesky with diagonal loading.
        chol, info = torch.linalg.cholesky_ex(r[..., idx].contiguous())
        if bool((info > 0).any()):
            raise ValueError("SDR: the target's autocorrelation matrix is not positive definite; raise load_diag")
        sol = torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)
        coh = (b * sol).sum(-1).clamp(1e-12, 1 - 1e-12)
        out.append(10 * torch.log10(coh / (1 - coh)))
    return torch.cat(out).to(estimate.dtype).reshape(shape)


def _pairwise(metric, estimates: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """``[B, S, S]`` matrix ``M[b, i, j] = metric(estimates[b, i], targets[b, j])``."""
    s = estimates.shape[1]
    est = estimates.unsqueeze(2).expand(-1, -1, s, -1)
    tgt = targets.unsqueeze(1).expand(-1, s, -1, -1)
    return metric(est, tgt)


def pit_permutation(estimates: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best speaker permutation under SI-SNR (exhaustive; fine for 2-3 speakers).

    Args:
        estimates: ``[B, S, T]``.
        targets: ``[B, S, T]``.

    Returns:
        ``(best_si_snr [B, S] in target order, perm [B, S])`` where ``perm[b, j]`` is the estimate index
        matched to target ``j``.
    """
    if estimates.dim() != 3 or estimates.shape != targets.shape:
        raise ValueError(f"need matching [B, S, T] tensors, got {tuple(estimates.shape)} and {tuple(targets.shape)}")
    mat = _pairwise(si_snr, estimates, targets)  # [B, S_est, S_tgt]
    s = estimates.shape[1]
    perms = torch.tensor(list(itertools.permutations(range(s))), device=estimates.device)  # [P, S]
    tgt_idx = torch.arange(s, device=estimates.device)
    scores = mat[:, perms, tgt_idx]  # [B, P, S]: est perms[p, j] vs target j
    best = scores.mean(-1).argmax(-1)  # [B]
    return scores[torch.arange(len(best)), best], perms[best]


def pit_si_snr_loss(estimates: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Permutation-invariant negative SI-SNR, averaged over the batch (Conv-TasNet's training loss).

    Args:
        estimates: ``[B, S, T]`` separated sources.
        targets: ``[B, S, T]`` references.

    Returns:
        Scalar loss (dB, lower is better).
    """
    best, _ = pit_permutation(estimates, targets)
    return -best.mean()


def reorder(estimates: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Put ``estimates`` ``[B, S, T]`` in target order given ``perm`` from :func:`pit_permutation`."""
    return estimates[torch.arange(estimates.shape[0]).unsqueeze(1), perm]


def si_snri(estimates: torch.Tensor, targets: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """SI-SNR improvement over the mixture, per example, after the PIT permutation.

    Args:
        estimates: ``[B, S, T]``.
        targets: ``[B, S, T]``.
        mixture: ``[B, T]``.

    Returns:
        ``[B]`` mean SI-SNRi over speakers, in dB.
    """
    best, _ = pit_permutation(estimates, targets)
    base = si_snr(mixture.unsqueeze(1).expand_as(targets), targets)
    return (best - base).mean(-1)


def sdri(estimates: torch.Tensor, targets: torch.Tensor, mixture: torch.Tensor, filter_length: int = 512) -> torch.Tensor:
    """BSS-Eval SDR improvement over the mixture, per example, under the SI-SNR PIT permutation.

    Args:
        estimates: ``[B, S, T]``.
        targets: ``[B, S, T]``.
        mixture: ``[B, T]``.

    Returns:
        ``[B]`` mean SDRi over speakers, in dB.
    """
    _, perm = pit_permutation(estimates, targets)
    est = reorder(estimates, perm)
    base = sdr(mixture.unsqueeze(1).expand_as(targets).contiguous(), targets, filter_length)
    return (sdr(est, targets, filter_length) - base).mean(-1)
