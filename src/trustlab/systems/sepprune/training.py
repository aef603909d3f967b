"""Training, fine-tuning and evaluation loops for the separators (PIT negative SI-SNR, Adam, clip 5).

The recipe follows the paper's fine-tuning setup (Adam, lr 1e-3, gradient clipping 5, negative
SI-SNR with permutation-invariant training); an "epoch" is one pass over a fixed, seeded set of
training mixtures.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from trustlab.metrics.audio import pit_si_snr_loss, sdri, si_snri
from trustlab.utils.progress import progress


def batches(dataset: torch.utils.data.Dataset, batch_size: int, seed: int,
            epochs: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled mini-batches ``(mix [B, T], sources [B, S, T])``; endless when ``epochs`` is None.

    The order is a pure function of ``seed``; a last incomplete batch is dropped.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(dataset)  # type: ignore[arg-type]
    if n < batch_size:
        raise ValueError(f"dataset of {n} items is smaller than one batch of {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    epoch = 0
    while epochs is None or epoch < epochs:
        order = torch.randperm(n, generator=gen).tolist()
        for s in range(0, n - batch_size + 1, batch_size):
            items = [dataset[i] for i in order[s : s + batch_size]]
            yield torch.stack([m for m, _ in items]), torch.stack([x for _, x in items])
        epoch += 1


def train(model: nn.Module, data: Iterator[tuple[torch.Tensor, torch.Tensor]], steps: int | None = None,
          lr: float = 1e-3, grad_clip: float = 5.0, device: torch.device | str = "cpu",
          desc: str = "train", state: dict | None = None) -> list[float]:
    """Adam on PIT negative SI-SNR; runs ``steps`` batches (or until ``data`` ends). Returns the losses.

    ``state``: a dict kept by the caller across calls so that training in segments (with evaluations in
    between) continues the same Adam optimizer, i.e. equals one uninterrupted run.
    """
    if lr <= 0 or grad_clip <= 0:
        raise ValueError("lr and grad_clip must be positive")
    model.to(device).train()
    if state is not None and "opt" in state:
        opt = state["opt"]
    else:
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
        if state is not None:
            state["opt"] = opt
    losses: list[float] = []
    it = data if steps is None else (b for _, b in zip(range(steps), data, strict=False))
    for mix, src in progress(it, total=steps, desc=desc):
        loss = pit_si_snr_loss(model(mix.to(device)), src.to(device))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def evaluate(model: nn.Module, mix: torch.Tensor, sources: torch.Tensor, batch_size: int = 32,
             device: torch.device | str = "cpu", with_sdr: bool = True) -> dict[str, float]:
    """Mean SI-SNRi and (optionally) BSS-Eval SDRi in dB of ``model`` on ``(mix [n, T], sources [n, S, T])``."""
    model.to(device).eval()
    a, b = [], []
    for s in range(0, len(mix), batch_size):
        m, x = mix[s : s + batch_size].to(device), sources[s : s + batch_size].to(device)
        est = model(m)
        a.append(si_snri(est, x, m).cpu())
        if with_sdr:
            b.append(sdri(est, x, m).cpu())
    out = {"si_snri_db": float(torch.cat(a).mean())}
    if with_sdr:
        out["sdri_db"] = float(torch.cat(b).mean())
    return out
